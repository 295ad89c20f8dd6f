"""Analytic model FLOPs and hardware peaks, for TFLOP/s and MFU (REFERENCE.md section 4).

Counts multiply-adds as 2 FLOPs, attention in full (non-causal, both QK^T and PV), and nothing
for elementwise work. A training step of frozen weights + LoRA needs the forward, the backward
through activations (one more matmul per frozen matmul on the token streams, two per
self-attention matmul, one per cross-attention matmul; none for the text and patch embedders,
which no gradient passes through), and weight gradients only for the LoRA adapters: about 4N
FLOPs per token rather than 6N. Rematerialised
recomputation is not model FLOPs and is not counted (that is what MFU means).
"""
from __future__ import annotations

import dataclasses
import math

from wildactor_jax.models.config import ModelConfig

# bf16 dense peak TFLOP/s per device (REFERENCE.md section 4). TPU7x: 2 devices per chip.
PEAK_TFLOPS = {
    "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v5": 459.0,
    "TPU v6 lite": 918.0, "TPU v6e": 918.0, "TPU7x": 2307.0 / 2,
    "NVIDIA H100": 989.0, "NVIDIA H200": 989.0, "NVIDIA B200": 2250.0,
}
HBM_GIB = {"TPU v4": 32, "TPU v5 lite": 16, "TPU v5e": 16, "TPU v5p": 95, "TPU v5": 95,
           "TPU v6 lite": 32, "TPU v6e": 32, "TPU7x": 96}
HBM_TBPS = {"TPU v4": 1.2, "TPU v5 lite": 0.82, "TPU v5e": 0.82, "TPU v5p": 2.77, "TPU v5": 2.77,
            "TPU v6 lite": 1.64, "TPU v6e": 1.64, "TPU7x": 7.38 / 2, "NVIDIA H100": 3.35,
            "NVIDIA H200": 4.8, "NVIDIA B200": 8.0}


def device_peak_tflops(device_kind: str) -> float | None:
  """The bf16 peak for a jax `device.device_kind`, longest matching prefix; None if unknown."""
  best = None
  for name in PEAK_TFLOPS:
    if device_kind.startswith(name) and (best is None or len(name) > len(best)):
      best = name
  return PEAK_TFLOPS[best] if best else None


@dataclasses.dataclass(frozen=True)
class StepFlops:
  """Forward FLOPs by how they behave in a LoRA training step's backward pass."""
  matmul_forward_only: float  # no gradient flows through them: patch/text embedders, text K/V
  matmul_backprop: float      # frozen matmuls on the token streams (+ head): dX in the backward
  lora: float                 # adapters: dX and dW in the backward
  self_attention: float       # QK^T and PV; backward dQ, dK, dV = 2x forward
  cross_attention: float      # to text; backward needs dQ only = 1x forward

  @property
  def forward(self) -> float:
    return (self.matmul_forward_only + self.matmul_backprop + self.lora + self.self_attention
            + self.cross_attention)

  @property
  def train(self) -> float:
    """forward + backward through activations + LoRA weight gradients (no frozen dW)."""
    return (self.forward + self.matmul_backprop + 2 * self.lora + 2 * self.self_attention
            + self.cross_attention)


def forward_flops(cfg: ModelConfig, video_tokens: int, ref_tokens: int = 0, text_tokens: int = 512,
                  batch: int = 1, ref_cached: bool = False) -> StepFlops:
  """One forward of `batch` samples. ref_cached: references' K/V come from the cache (inference
  steps after `encode_references`), so the reference stream costs nothing per step."""
  d, f, nl = cfg.dim, cfg.ffn_dim, cfg.num_layers
  lv, lr, s = video_tokens, ref_tokens, text_tokens
  lr_stream = 0 if ref_cached else lr
  patch = math.prod(cfg.patch_size)
  forward_only = 2 * (lv + lr_stream) * patch * cfg.in_channels * d     # patch embedding
  forward_only += 2 * s * (cfg.text_dim * d + d * d)                   # text embedder
  forward_only += nl * 2 * s * d * d * 2                               # cross-attn k, v on text
  backprop = 2 * lv * d * patch * cfg.out_channels                     # output head
  per_layer = 2 * (lv + lr_stream) * d * d * 4                         # self-attn q, k, v, o
  per_layer += 2 * lv * d * d * 2                                      # cross-attn q, o
  per_layer += 2 * (lv + lr_stream) * d * f * 2                        # FFN
  backprop += nl * per_layer
  lora = 0
  if cfg.has_lora and lr_stream:  # the symmetric ablation adapts video tokens too
    lora_tokens = lr_stream if cfg.aipa else lv + lr_stream
    lora = nl * 2 * lora_tokens * 2 * d * cfg.lora_rank * len(cfg.lora_targets)
  if lr and not cfg.aipa:                                              # symmetric ablation
    self_attn = 2 * 2 * d * (lv + lr) ** 2
  else:                                                                # AIPA: two dense calls
    self_attn = 2 * 2 * d * (lv * (lv + lr) + lr_stream * lr)
  cross = 2 * 2 * d * lv * s
  return StepFlops(batch * forward_only, batch * backprop, batch * lora,
                   batch * nl * self_attn, batch * nl * cross)


def mfu(flops: float, seconds: float, num_devices: int, device_kind: str) -> dict:
  peak = device_peak_tflops(device_kind)
  tflops = flops / seconds / num_devices / 1e12
  return {"tflops_per_device": tflops, "peak_tflops": peak,
          "mfu": (tflops / peak) if peak else None}
