"""Pallas splash attention on one device's arrays: block sizes, padding, padding as segment ids.

The kernel (jax.experimental.pallas.ops.tpu.splash_attention) computes softmax(q k^T) v per head
in VMEM tiles, so the (Lq, Lk) logits never reach HBM. It takes (N, L, D) per example; we vmap it
over the batch. Key padding (and AIPA's valid-reference prefix) is carried as segment ids: valid
keys and every query get id 0, padded keys id 1, so no dense mask is ever built. Sequences are
padded up to the block sizes (padded queries are dropped, padded keys masked). Off TPU the kernel
runs in Pallas interpret mode, which is how CPU tests check it.

Block sizes are (block_q, block_kv, block_kv_compute): block_q queries and block_kv keys are
staged HBM -> VMEM per grid step, and the logits are computed block_kv_compute keys at a time
(block_q x block_kv_compute float32 in vregs/VMEM). The backward pass uses the fused dq/dk/dv
kernel with the same tiles. Bigger tiles mean fewer grid steps and less re-reading of K/V (which
is re-read once per query block), bounded by VMEM. Sequences shorter than a block shrink it.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

LANES = 128  # the kernel's minimum tile along a sequence
# Per TPU generation, for head_dim 128 in bfloat16 (the Wan2.x backbones): larger tiles on the
# newer chips, the logits tile (block_q x block_kv_compute float32) 1, 2 and 4 MiB. They compile
# (deviceless AOT, train step with remat) for each generation; not yet tuned on hardware.
CHIP_BLOCK_SIZES = {
    "v5e": (512, 1024, 512),
    "v5p": (1024, 1024, 512),
    "v6e": (1024, 2048, 1024),
}
DEFAULT_BLOCK_SIZES = (512, 512, 512)


def block_sizes_for(chip: str) -> tuple[int, int, int]:
  """Block sizes for a TPU generation: 'v5p', a preset 'v6e-64' or a topology 'v5e:4x4'; the
  default for anything else."""
  generation = chip.replace(":", "-").split("-")[0]
  generation = {"v5litepod": "v5e"}.get(generation, generation)
  return CHIP_BLOCK_SIZES.get(generation, DEFAULT_BLOCK_SIZES)


def check_block_sizes(block_sizes) -> tuple[int, int, int]:
  sizes = tuple(int(b) for b in block_sizes)
  if len(sizes) != 3 or any(b <= 0 or b % LANES for b in sizes) or sizes[1] % sizes[2]:
    raise ValueError(f"model.splash_block_sizes {tuple(block_sizes)}: expected (block_q, block_kv, "
                     f"block_kv_compute), multiples of {LANES}, block_kv_compute dividing block_kv")
  return sizes


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def tiles(lq: int, lk: int, block_sizes) -> tuple[int, int, int]:
  """The block sizes actually used for (lq, lk): each shrunk to its sequence (rounded up to 128)."""
  bq, bkv, bkvc = check_block_sizes(block_sizes)
  bq = min(bq, _round_up(lq, LANES))
  bkv = min(bkv, _round_up(lk, LANES))
  bkvc = bkvc if bkv % bkvc == 0 and bkvc <= bkv else bkv
  return bq, bkv, bkvc


@functools.lru_cache(maxsize=64)
def _kernel(heads: int, lq: int, lk: int, bq: int, bkv: int, bkvc: int, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  sizes = sk.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkvc, block_q_dkv=bq,
                        block_kv_dkv=bkv, block_kv_dkv_compute=bkvc, use_fused_bwd_kernel=True)
  mask = sm.MultiHeadMask([sm.FullMask((lq, lk)) for _ in range(heads)])
  with jax.ensure_compile_time_eval():  # the mask tables are constants, also when first built
    return sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                              interpret=interpret)


def splash_attention(q, k, v, kv_lengths=None, block_sizes=DEFAULT_BLOCK_SIZES,
                     interpret: bool | None = None):
  """softmax(q k^T / sqrt(D)) v over the first kv_lengths[b] keys, on this device's arrays.

  q (B, Lq, N, D); k, v (B, Lk, N, D); kv_lengths (B,) int32, each at least 1 (an all-padding
  row would divide by zero in the kernel, as in any softmax). interpret: Pallas interpret mode
  (default: unless the default backend is TPU; AOT compiles for a TPU topology pass False).
  """
  interpret = jax.default_backend() != "tpu" if interpret is None else interpret
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  b, lq, n, d = q.shape
  lk = k.shape[1]
  bq, bkv, bkvc = tiles(lq, lk, block_sizes)
  pq, pk = -lq % bq, -lk % bkv
  pad = lambda x, p: jnp.pad(x, ((0, 0), (0, p), (0, 0), (0, 0))) if p else x
  q, k, v = pad(q, pq), pad(k, pk), pad(v, pk)
  kernel = _kernel(n, lq + pq, lk + pk, bq, bkv, bkvc, interpret)
  lengths = jnp.full((b,), lk, jnp.int32) if kv_lengths is None else kv_lengths.astype(jnp.int32)
  kv_seg = (jnp.arange(lk + pk)[None, :] >= lengths[:, None]).astype(jnp.int32)
  q_seg = jnp.zeros((b, lq + pq), jnp.int32)
  scale = d ** -0.5

  def one(qb, kb, vb, qs, ks):  # (L, N, D) -> the kernel's (N, L, D)
    return kernel((qb * scale).swapaxes(0, 1), kb.swapaxes(0, 1), vb.swapaxes(0, 1),
                  segment_ids=sk.SegmentIds(q=qs, kv=ks)).swapaxes(0, 1)

  return jax.vmap(one)(q, k, v, q_seg, kv_seg)[:, :lq]
