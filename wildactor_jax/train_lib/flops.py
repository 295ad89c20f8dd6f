"""Analytic model FLOPs of one training step, hardware peaks, and MFU.

Counts 2 FLOPs per multiply-add for every matmul and for attention in full (QK^T and PV,
non-causal, padded reference slots included: the compiled step computes them). Elementwise work
(norms, RoPE, modulation, softmax) is not counted. Rematerialised recomputation is not model
work and is not counted either, which is what makes it MFU and not hardware utilisation.

A LoRA step on a frozen backbone needs, per part of the forward:
  frozen matmul whose input needs a gradient   x2  (forward + dX; no dW: ~4N, not 6N, per token)
  LoRA matmul                                  x3  (forward + dX + dW)
  self-attention                               x3  (forward QK^T, PV; backward dP, dV, dS->dQ, dK)
  cross-attention over text                    x2  (text K/V are constants: dP and dQ only)
  work on constants (patch/text/time embedding, text K/V projections)   x1 (no backward)
"""
from __future__ import annotations

import math

from wildactor_jax.models.config import ModelConfig

# bf16 dense peak TFLOP/s per jax device, HBM GiB and TB/s (REFERENCE.md section 4). A v5p chip
# is one jax device (megacore); a TPU7x chip is two.
CHIPS = {  # device_kind prefix -> (peak TFLOP/s, HBM GiB, HBM TB/s)
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


def train_step_flops(cfg: ModelConfig, batch: int, video_tokens: int, ref_tokens: int,
                     text_tokens: int, timestep_groups: int) -> dict[str, float]:
  """{"forward": ..., "train": ...} model FLOPs of one step of `batch` samples.

  video_tokens / ref_tokens: tokens per sample (after patching; refs = R_max slots x tokens per
  reference); timestep_groups: video timestep embeddings per sample (latent frames); the
  references' t = 0 embedding is added here.
  """
  d, f, nl, r = cfg.dim, cfg.ffn_dim, cfg.num_layers, cfg.lora_rank if cfg.has_lora else 0
  lv, lr, s = video_tokens, ref_tokens, text_tokens
  patch = math.prod(cfg.patch_size)
  lora_tokens = lr if cfg.aipa else lv + lr  # the symmetric ablation adapts video tokens too
  parts = {  # name: (forward FLOPs per sample, train multiplier)
      "embed": (2 * (lv + lr) * patch * cfg.in_channels * d + 2 * s * (cfg.text_dim * d + d * d)
                + 2 * (timestep_groups + 1) * (cfg.freq_dim * d + d * d + 6 * d * d), 1),
      "self_proj": (nl * 2 * (lv + lr) * 4 * d * d, 2),
      "lora": (nl * 2 * lora_tokens * len(cfg.lora_targets) * 2 * d * r, 3),
      "self_attn": (nl * 4 * d * ((lv * (lv + lr) + lr * lr) if cfg.aipa else (lv + lr) ** 2), 3),
      "cross_proj_video": (nl * 2 * lv * 2 * d * d, 2),
      "cross_proj_text": (nl * 2 * s * 2 * d * d, 1),
      "cross_attn": (nl * 4 * d * lv * s, 2),
      "ffn": (nl * 2 * (lv + lr) * 2 * d * f, 2),
      "head": (2 * lv * d * patch * cfg.out_channels, 2),
  }
  forward = batch * sum(v for v, _ in parts.values())
  train = batch * sum(v * m for v, m in parts.values())
  return {"forward": float(forward), "train": float(train)}


def _token_counts(config, shapes) -> tuple[ModelConfig, int, int, int, int]:
  from wildactor_jax.train_lib.data_spec import example_shapes
  cfg = ModelConfig.from_mapping(config.model)
  shapes = shapes or example_shapes(config)
  t, h, w, _ = shapes["video_latents"]
  pt, ph, pw = cfg.patch_size
  per_frame = (h // ph) * (w // pw)
  return cfg, (t // pt) * per_frame, shapes["ref_latents"][0] * per_frame, shapes["text_embeds"][0], t // pt


def step_flops_for_config(config, shapes: dict | None = None) -> dict[str, float]:
  """Model FLOPs of one global training step; per-example `shapes` (key -> shape without the
  batch axis) default to the config's (data_spec.example_shapes)."""
  cfg, video, refs, text, frames = _token_counts(config, shapes)
  return train_step_flops(cfg, config.data.global_batch_size, video, refs, text, frames)


def tokens_per_step(config, shapes: dict | None = None) -> int:
  """Video + reference tokens of one global step (the sequence the DiT processes)."""
  _, video, refs, _, _ = _token_counts(config, shapes)
  return config.data.global_batch_size * (video + refs)


def utilisation(train_flops: float, seconds_per_step: float, num_devices: int,
                device_kind: str) -> dict[str, float | None]:
  """TFLOP/s per device and MFU (None where the device's peak is unknown, e.g. CPU)."""
  tflops = train_flops / seconds_per_step / num_devices / 1e12
  spec = chip_spec(device_kind)
  return {"tflops_per_device": tflops, "mfu": tflops / spec[0] if spec else None}
