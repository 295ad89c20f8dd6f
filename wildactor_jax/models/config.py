"""The model configuration: backbone architecture, numerics, and the WildActor reference branch.

A frozen dataclass, built from the `config.model` ConfigDict of an experiment file (or from a
converted checkpoint's config.json), so jitted code can close over it as a static value. Its
field defaults are the only place model defaults are written: `config_lib.model_config` starts
from them. The architecture defaults are Wan2.2-TI2V-5B's; the WildActor constants (I-RoPE
offsets, reference stride, LoRA targets) and their sources are listed in docs/method.md.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

REMAT_POLICIES = ("none", "full", "save_dots")
VIDEO_LORA_TARGETS = ("q", "k", "v", "o", "ffn_in", "ffn_out")
# The reference LoRA may adapt the same projections (the paper's targets: q, k, v).
REFERENCE_LORA_TARGETS = VIDEO_LORA_TARGETS
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  # Backbone (diffusers WanTransformer3DModel semantics).
  dim: int = 3072
  ffn_dim: int = 14336
  num_heads: int = 24
  num_layers: int = 30
  in_channels: int = 48
  out_channels: int = 48
  text_dim: int = 4096
  freq_dim: int = 256
  patch_size: tuple[int, int, int] = (1, 2, 2)
  eps: float = 1e-6
  rope_max_seq_len: int = 1024
  rope_theta: float = 10000.0
  cross_attn_norm: bool = True
  # Numerics and execution.
  param_dtype: str = "float32"
  dtype: str = "float32"            # compute dtype of matmuls; norms/modulation run in float32
  remat: str = "none"               # none | full | save_dots
  attention: str = "xla"            # xla | cudnn | splash
  splash_block_sizes: tuple[int, int, int] = (512, 512, 512)  # block_q, block_kv, kv_compute
  context_parallel: str = "all_gather"  # all_gather | ulysses: how sequence shards meet K/V
  # Reference-only LoRA (lora=False or rank 0: references go through the frozen weights only).
  lora: bool = True
  lora_rank: int = 0
  lora_scale: float = 1.0
  lora_targets: tuple[str, ...] = ("q", "k", "v")   # also o, ffn_in, ffn_out (reference FFN)
  # The video tokens' adapter set (models/lora.py), e.g. a few-step step LoRA (wildactor_jax/
  # distill): rank 0 = none. Targets: self-attention q, k, v, o and the FFN's ffn_in, ffn_out.
  video_lora_rank: int = 0
  video_lora_scale: float = 1.0
  video_lora_targets: tuple[str, ...] = ("q", "k", "v", "o", "ffn_in", "ffn_out")
  # WildActor reference branch and the paper's ablation switches.
  aipa: bool = True                 # False: symmetric attention over [video; refs], LoRA on all
  irope: bool = True                # False: references reuse the video's position range
  face_temporal_offset: int = 4
  body_temporal_offset: int = 128
  reference_frame_stride: int = 4

  def __post_init__(self):
    if self.dim % self.num_heads:
      raise ValueError(f"model.dim {self.dim} is not divisible by model.num_heads {self.num_heads}")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"model.remat {self.remat!r}: expected one of {REMAT_POLICIES}")
    for field in ("param_dtype", "dtype"):
      if getattr(self, field) not in DTYPES:
        raise ValueError(f"model.{field} {getattr(self, field)!r}: expected one of {sorted(DTYPES)}")
    bad = set(self.lora_targets) - set(REFERENCE_LORA_TARGETS)
    if bad:
      raise ValueError(f"model.lora_targets {sorted(bad)}: expected a subset of "
                       f"{', '.join(REFERENCE_LORA_TARGETS)}")
    bad = set(self.video_lora_targets) - set(VIDEO_LORA_TARGETS)
    if bad or self.video_lora_rank < 0:
      raise ValueError(f"model.video_lora_targets {list(self.video_lora_targets)} / rank "
                       f"{self.video_lora_rank}: expected a subset of {VIDEO_LORA_TARGETS} and "
                       "a rank >= 0")

  @property
  def has_lora(self) -> bool:
    return self.lora and self.lora_rank > 0

  @property
  def has_video_lora(self) -> bool:
    return self.video_lora_rank > 0 and bool(self.video_lora_targets)

  @property
  def head_dim(self) -> int:
    return self.dim // self.num_heads

  @property
  def jnp_dtype(self):
    return DTYPES[self.dtype]

  @property
  def jnp_param_dtype(self):
    return DTYPES[self.param_dtype]

  @classmethod
  def from_mapping(cls, mapping: Mapping[str, Any]) -> "ModelConfig":
    """From a ConfigDict/dict; unknown keys are an error naming them."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = dict(mapping)
    values.pop("name", None)
    unknown = sorted(set(values) - fields)
    if unknown:
      raise ValueError(f"model config: unknown fields {unknown}")
    for key in ("patch_size", "lora_targets", "video_lora_targets", "splash_block_sizes"):
      if key in values:
        values[key] = tuple(values[key])
    return cls(**values)

  def to_dict(self) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

  def backbone_fields(self) -> dict[str, Any]:
    """The architecture fields that must match between a checkpoint and a model."""
    keys = ("dim", "ffn_dim", "num_heads", "num_layers", "in_channels", "out_channels", "text_dim",
            "freq_dim", "patch_size", "eps", "cross_attn_norm")
    d = self.to_dict()
    return {k: d[k] for k in keys}
