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

import jax.numpy as jnp

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


# Per TPU chip: ICI ports and bidirectional ICI bandwidth in GB/s, from the Cloud TPU system
# architecture pages (v5e: 4 ports, 400 GB/s; v6e: 4, 800; v5p: 6, 1200; docs/method.md s.4).
# One link carries bandwidth / ports, half of it in each direction.
ICI = {"TPU v5 lite": (4, 400.0), "TPU v5e": (4, 400.0), "TPU v5": (6, 1200.0),
       "TPU v5p": (6, 1200.0), "TPU v6 lite": (4, 800.0), "TPU v6e": (4, 800.0)}


def _longest_prefix(table: dict, device_kind: str):
  names = [n for n in table if device_kind.startswith(n)]
  return table[max(names, key=len)] if names else None


def ici_link_bytes_per_s(device_kind: str) -> float | None:
  """One direction of one ICI link, bytes/s; None where the chip's ICI is not in `ICI`."""
  spec = _longest_prefix(ICI, device_kind)
  return spec[1] * 1e9 / spec[0] / 2 if spec else None


def chip_spec(device_kind: str) -> tuple[float, float, float] | None:
  """(peak TFLOP/s, HBM GiB, HBM TB/s) for a jax `device_kind` (longest prefix); None if unknown."""
  return _longest_prefix(CHIPS, device_kind)


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
  io = {"q": 2 * d, "k": 2 * d, "v": 2 * d, "o": 2 * d, "ffn_in": d + f, "ffn_out": f + d}
  if cfg.has_lora and lr_stream:  # (in + out) x rank per target; symmetric: video tokens too
    lora_tokens = lr_stream if cfg.aipa else lv + lr_stream
    lora = nl * 2 * lora_tokens * cfg.lora_rank * sum(io[t] for t in cfg.lora_targets)
  if cfg.has_video_lora:  # the video tokens' adapter set (a step LoRA)
    lora += nl * 2 * lv * cfg.video_lora_rank * sum(io[t] for t in cfg.video_lora_targets)
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


def reference_count_distribution(config, shapes: dict | None = None) -> dict[int, float]:
  """{n: P(an example carries n valid references)} under the config's task mix and count rules,
  i.e. what the step's R_max reference slots hold on average (the rest is padding it computes).

  config.data.source "records" (input/records_source.py): t2v and i2v examples carry none; vc
  examples (and continue ones unless data.continue_references is False) draw faces from
  0..max_faces and bodies from 0..max_bodies (fixed num_faces, num_bodies when random_counts is
  False), the larger count giving way until the total fits r_max, at least one. This assumes
  every record holds max_faces usable faces and max_bodies bodies: with fewer, fewer are drawn
  and this is an upper bound. "random" (input/random_source.py): 1..r_max uniformly."""
  from wildactor_jax.input.schema import (CONTINUE, VC, continue_options, example_shapes,
                                          task_probabilities)
  data = config.data
  r_max = int((shapes or example_shapes(config))["ref_mask"][0])
  random = data.get("source", "records") == "random"
  default_mix = {"vc": 1.0} if random else {"t2v": 0.1, "i2v": 0.1, "vc": 0.8}
  p_task = task_probabilities(data.get("task_probs", default_mix))
  p_refs = float(p_task[VC] + (p_task[CONTINUE] if continue_options(data)[1] else 0.0))
  counts: dict[int, float] = {}
  if r_max == 0 or p_refs == 0:
    return {0: 1.0}
  if random:
    drawn = {n: 1.0 / r_max for n in range(1, r_max + 1)}
  elif data.get("random_counts", True):
    faces, bodies = int(data.get("max_faces", 5)), int(data.get("max_bodies", 5))
    drawn = {}
    for nf in range(faces + 1):
      for nb in range(bodies + 1):
        n = max(1, min(nf + nb, r_max))
        drawn[n] = drawn.get(n, 0.0) + 1.0 / ((faces + 1) * (bodies + 1))
  else:
    fixed = int(data.get("num_faces", 3)) + int(data.get("num_bodies", 3))
    drawn = {max(1, min(fixed, r_max)): 1.0}
  counts[0] = 1.0 - p_refs
  for n, p in drawn.items():
    counts[n] = counts.get(n, 0.0) + p_refs * p
  return {n: p for n, p in sorted(counts.items()) if p > 0}


def mean_references(config, shapes: dict | None = None) -> float:
  """Valid references per example on average (`reference_count_distribution`)."""
  return sum(n * p for n, p in reference_count_distribution(config, shapes).items())


def step_flops_for_config(config, shapes: dict | None = None) -> StepFlops:
  """Model FLOPs of one global training step of `config`, valid references only: the expected
  FLOPs over `reference_count_distribution` (padded reference slots are work the step does, not
  model FLOPs; attention is not linear in the count, so this is the mean of the FLOPs, not the
  FLOPs of the mean count)."""
  from wildactor_jax.input.schema import example_shapes
  shapes = shapes or example_shapes(config)
  cfg, video, refs, text = step_tokens(config, shapes)
  slots = shapes["ref_latents"][0]
  per_ref = refs // slots if slots else 0
  dist = reference_count_distribution(config, shapes)
  batch = int(config.data.global_batch_size)
  parts = [(p, forward_flops(cfg, video, n * per_ref, text, batch=batch)) for n, p in dist.items()]
  return StepFlops(*(sum(p * getattr(f, field.name) for p, f in parts)
                     for field in dataclasses.fields(StepFlops)))


def tokens_per_step(config, shapes: dict | None = None) -> int:
  """Video + reference tokens of one global step (the sequence the DiT processes)."""
  _, video, refs, _ = step_tokens(config, shapes)
  return int(config.data.global_batch_size) * (video + refs)


def mfu(flops: float, seconds: float, num_devices: int, device_kind: str) -> dict:
  peak = device_peak_tflops(device_kind)
  tflops = flops / seconds / num_devices / 1e12
  return {"tflops_per_device": tflops, "peak_tflops": peak,
          "mfu": (tflops / peak) if peak else None}


# ---- the splash attention kernel ------------------------------------------------------------
# XLA's cost analysis sees a Mosaic kernel as an opaque custom call (no FLOPs; at most its
# operands' bytes), so a roofline adds the kernel's own work from this model of its tiling
# (models/splash.py; jax.experimental.pallas.ops.tpu.splash_attention), per call on padded
# lengths (Lq, Lk rounded up to the tiles), BN = batch x heads, s = bytes per element:
# - forward, grid (head, q block, kv block): QK^T and PV = 4 BN Lq Lk D FLOPs, BN Lq Lk exp.
#   Q is fetched once per q block and stays resident over the kv loop; K and V are re-read once
#   per q block: 2 BN Lk D s (Lq / block_q). O is written once; training also writes the
#   logsumexp residual, f32 broadcast over 128 lanes. Segment ids (int32) come as (block_q, 128)
#   query tiles and (8, block_kv) key tiles, re-read per q block.
# - backward, the fused dq/dk/dv kernel, grid (kv block, head, q block): recomputes S = QK^T and
#   computes dP = dO V^T, dV += P^T dO, dK += dS^T Q, dQ = dS K: 10 BN Lq Lk D FLOPs, BN Lq Lk exp.
#   K and V are read once, Q, dO, logsumexp and dO.O (f32, 8 sublanes) once per kv block; dK, dV
#   are written once and dQ once per kv block as partial sums (XLA then adds them up: that sum,
#   dO.O and the padding are ordinary XLA ops its own cost analysis already counts).
# Work on padded rows and keys is counted: the kernel does it (segment ids mask, never skip).
LANES, SUBLANES, INT32, F32 = 128, 8, 4, 4


@dataclasses.dataclass(frozen=True)
class KernelCost:
  """FLOPs, transcendentals (exp) and HBM bytes read + written inside attention kernels."""
  flops: float = 0.0
  transcendentals: float = 0.0
  hbm_bytes: float = 0.0

  def __add__(self, other: "KernelCost") -> "KernelCost":
    return KernelCost(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

  def __mul__(self, k: float) -> "KernelCost":
    return KernelCost(*(a * k for a in dataclasses.astuple(self)))

  __rmul__ = __mul__

  def seconds(self, device_kind: str) -> dict:
    """Roofline times on one chip: compute (peak), HBM (bandwidth), and the bound (their max)."""
    spec = chip_spec(device_kind)
    if spec is None:
      raise ValueError(f"device kind {device_kind!r}: expected one of {sorted(CHIPS)}")
    compute, hbm = self.flops / (spec[0] * 1e12), self.hbm_bytes / (spec[2] * 1e12)
    return {"compute_s": compute, "hbm_s": hbm, "bound_s": max(compute, hbm)}


def splash_call_cost(batch: int, lq: int, lk: int, heads: int, head_dim: int, block_sizes, *,
                     dtype_bytes: int = 2, train: bool = False) -> KernelCost:
  """One splash call on one device's shard: its forward, plus (train) its fused backward."""
  from wildactor_jax.models.splash import tiles
  bq, bkv, _ = tiles(lq, lk, block_sizes)
  lq, lk = -(-lq // bq) * bq, -(-lk // bkv) * bkv
  bn, q_blocks, kv_blocks = batch * heads, lq // bq, lk // bkv
  pairs = bn * lq * lk
  q_tensor = bn * lq * head_dim * dtype_bytes   # one of Q, O, dO, dQ
  kv_tensor = bn * lk * head_dim * dtype_bytes  # one of K, V, dK, dV
  forward = KernelCost(
      4 * pairs * head_dim, pairs,
      2 * q_tensor + 2 * kv_tensor * q_blocks                   # Q, O; K, V per q block
      + bn * lq * LANES * INT32 + bn * q_blocks * SUBLANES * lk * INT32  # segment ids
      + (bn * lq * LANES * F32 if train else 0))                # logsumexp residual
  if not train:
    return forward
  backward = KernelCost(
      10 * pairs * head_dim, pairs,
      4 * kv_tensor                                             # K, V in; dK, dV out
      + (2 * q_tensor + 2 * bn * SUBLANES * lq * F32) * kv_blocks  # Q, dO, logsumexp, dO.O
      + q_tensor * kv_blocks                                    # dQ partial sums
      + bn * kv_blocks * SUBLANES * lq * INT32 + bn * lk * LANES * INT32)  # segment ids
  return forward + backward


def splash_step_cost(cfg: ModelConfig, video_tokens: int, ref_tokens: int = 0,
                     text_tokens: int = 512, batch: int = 1, *, train: bool = True,
                     ref_cached: bool = False, mesh_shape=None, rules=None) -> KernelCost:
  """Every splash call of one step (all layers), on one device of a mesh of `mesh_shape`
  ({axis: size}; default one device) laid out as models/context_parallel.py lays it out:
  AIPA video->[video; refs] and refs->refs (or the symmetric joint call), text cross-attention.
  Training runs the backward and, under any remat policy, the forward twice (the kernel is no
  dot a policy could save). ref_cached: inference after `encode_references`."""
  from wildactor_jax.models.context_parallel import local_shape
  from wildactor_jax.sharding import DEFAULT_RULES
  mesh_shape = dict(mesh_shape or {"data": 1, "fsdp": 1, "context": 1, "tensor": 1})
  rules = DEFAULT_RULES if rules is None else rules
  lv, lr, s = video_tokens, ref_tokens, text_tokens
  if not lr:
    calls = [(lv, lv), (lv, s)]
  elif not cfg.aipa:
    calls = [(lv + lr, lv + lr), (lv, s)]
  else:
    calls = [(lv, lv + lr), (lv, s)] + ([] if ref_cached else [(lr, lr)])
  dtype_bytes = jnp.dtype(cfg.jnp_dtype).itemsize
  total = KernelCost()
  for lq, lk in calls:
    b, lq_local, n = local_shape((batch, lq, cfg.num_heads, cfg.head_dim), cfg.context_parallel,
                                 mesh_shape, rules)
    one = lambda train_: splash_call_cost(b, lq_local, lk, n, cfg.head_dim, cfg.splash_block_sizes,
                                          dtype_bytes=dtype_bytes, train=train_)
    total = total + one(train)
    if train and cfg.remat != "none":
      total = total + one(False)
  return total * cfg.num_layers

