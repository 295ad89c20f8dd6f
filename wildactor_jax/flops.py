"""Analytic model FLOPs and hardware peaks, for TFLOP/s and MFU (docs/method.md s.4).

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

# Per jax device: bf16 dense peak TFLOP/s, HBM GiB, HBM TB/s (docs/method.md s.4), keyed by
# `device.device_kind` prefix. A v5p chip is one jax device (megacore); a TPU7x chip is two.
CHIPS = {
    "TPU v4": (275.0, 32, 1.2), "TPU v5 lite": (197.0, 16, 0.82), "TPU v5e": (197.0, 16, 0.82),
    "TPU v5": (459.0, 95, 2.77), "TPU v5p": (459.0, 95, 2.77), "TPU v6 lite": (918.0, 32, 1.64),
    "TPU v6e": (918.0, 32, 1.64), "TPU7x": (2307.0 / 2, 96, 7.38 / 2),
    "NVIDIA H100": (989.0, 80 * 1e9 / 2**30, 3.35), "NVIDIA H200": (989.0, 141 * 1e9 / 2**30, 4.8),
    "NVIDIA B200": (2250.0, 180 * 1e9 / 2**30, 8.0),
}


def chip_spec(device_kind: str) -> tuple[float, float, float] | None:
  """(peak TFLOP/s, HBM GiB, HBM TB/s) for a jax `device_kind` (longest prefix); None if unknown."""
  names = [n for n in CHIPS if device_kind.startswith(n)]
  return CHIPS[max(names, key=len)] if names else None


def device_peak_tflops(device_kind: str) -> float | None:
  spec = chip_spec(device_kind)
  return spec[0] if spec else None


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


def step_tokens(config, shapes: dict | None = None) -> tuple[ModelConfig, int, int, int]:
  """(model config, video tokens, reference tokens (all R_max slots: the step computes padded
  slots too), text tokens) per example, from the config (or per-example `shapes`)."""
  from wildactor_jax.input.schema import example_shapes
  cfg = ModelConfig.from_mapping(config.model)
  shapes = shapes or example_shapes(config)
  t, h, w, _ = shapes["video_latents"]
  pt, ph, pw = cfg.patch_size
  per_frame = (h // ph) * (w // pw)
  return cfg, (t // pt) * per_frame, shapes["ref_latents"][0] * per_frame, shapes["text_embeds"][0]


def step_flops_for_config(config, shapes: dict | None = None) -> StepFlops:
  """Model FLOPs of one global training step of `config`."""
  cfg, video, refs, text = step_tokens(config, shapes)
  return forward_flops(cfg, video, refs, text, batch=int(config.data.global_batch_size))


def tokens_per_step(config, shapes: dict | None = None) -> int:
  """Video + reference tokens of one global step (the sequence the DiT processes)."""
  _, video, refs, _ = step_tokens(config, shapes)
  return int(config.data.global_batch_size) * (video + refs)


def mfu(flops: float, seconds: float, num_devices: int, device_kind: str) -> dict:
  peak = device_peak_tflops(device_kind)
  tflops = flops / seconds / num_devices / 1e12
  return {"tflops_per_device": tflops, "peak_tflops": peak,
          "mfu": (tflops / peak) if peak else None}
