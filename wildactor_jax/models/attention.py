"""Attention as pure functions: one call per (query set, key set), padding by lengths.

Tensors are (B, L, N, D). Padding is expressed as key lengths (valid keys form a prefix), never as
a dense (L, L) mask, so every backend can skip or cheaply mask the padded tail:
- "xla":   plain XLA, any backend (CPU default): long query sets (over DENSE_QUERIES) run in
           query chunks of about QUERY_CHUNK (the logits of one chunk at a time), which bounds
           the logits memory and is up to ~1.35x faster than one dense call on CPU at 2,560+
           queries; shorter ones call jax.nn.dot_product_attention, which is faster there
           (benchmarks/results/README.md, "Attention on CPU");
- "cudnn": the cuDNN fused flash kernel on NVIDIA GPUs;
- "splash": Pallas splash attention on TPU (models/splash.py; segment ids carry the padding),
           run under shard_map on the model's mesh (models/context_parallel.py).
All three compute softmax(q k^T / sqrt(D)) v over the first `kv_lengths[b]` keys.

Splash is safe by construction: a Mosaic kernel is opaque to XLA's partitioner ("Mosaic kernels
cannot be automatically partitioned"), so it only ever runs under shard_map on a mesh: the
enclosing `activation_sharding` (a WanTransformer enters its own mesh's, see
models/transformer.py, so what a jitted model call traces never depends on the caller's
context). Without a mesh it refuses in one line on a multi-device TPU host, and it refuses on
GPUs (the kernel is TPU-only; Pallas interpret mode there would be silently slow). On CPU it runs
in Pallas interpret mode, which is how CPU tests check it.

Keys and values may be given as parts to concatenate along length ([video ; references]): the
sharded path moves each part by its own sharding. `model.context_parallel` picks how sequence
shards meet: "all_gather" (K/V gathered over `context`) or "ulysses" (all-to-all to heads).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from wildactor_jax import sharding
from wildactor_jax.models import context_parallel as cp
from wildactor_jax.models.splash import DEFAULT_BLOCK_SIZES, splash_attention

IMPLEMENTATIONS = ("xla", "cudnn", "splash")
QUERY_CHUNK = 256
# One dense call up to this many queries: at 320 queries a 256-query chunking padded them to 512
# and made the demo's whole training step 1.4x slower; at 640 dense is still the fastest.
DENSE_QUERIES = 1024
KV_GATHERED = ("batch", None, "heads", None)  # keys/values whole along length (context parallel)


def attention_options(cfg) -> dict:
  """The attention keyword arguments a ModelConfig sets: backend, kernel tiles, context mode."""
  return dict(implementation=cfg.attention, block_sizes=cfg.splash_block_sizes,
              context_parallel=cfg.context_parallel)


def runs_in_chunks(queries: int) -> bool:
  """Whether the "xla" backend splits this many queries into chunks (else one dense call)."""
  return queries > max(DENSE_QUERIES, QUERY_CHUNK)


def balanced_chunk(length: int, chunk: int = QUERY_CHUNK) -> int:
  """The size (a multiple of 8) of the fewest equal chunks of at most about `chunk` queries that
  cover `length`: 1,280 -> 5 of 256; 1,300 -> 6 of 224 (44 queries padded, not 236)."""
  count = -(-length // chunk)      # ceil division throughout
  per_chunk = -(-length // count)
  return -(-per_chunk // 8) * 8


def chunked_attention(q, k, v, kv_lengths=None, chunk: int = QUERY_CHUNK):
  """Exact softmax attention computed one chunk of queries at a time (lax.map over chunks)."""
  b, lq, n, d = q.shape
  pad = -lq % chunk
  qp = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))) if pad else q
  qc = qp.reshape(b, -1, chunk, n, d).swapaxes(0, 1).astype(jnp.float32) * (d ** -0.5)
  kt = k.astype(jnp.float32).transpose(0, 2, 3, 1)  # (B, N, D, Lk)
  vt = v.astype(jnp.float32).transpose(0, 2, 1, 3)  # (B, N, Lk, D)
  valid = None
  if kv_lengths is not None:
    valid = (jnp.arange(k.shape[1])[None, :] < kv_lengths[:, None])[:, None, None, :]

  def one(qi):
    s = jnp.einsum("bqnd,bndk->bnqk", qi, kt)
    if valid is not None:
      s = jnp.where(valid, s, -1e30)
    p = jnp.exp(s - s.max(-1, keepdims=True))
    o = jnp.einsum("bnqk,bnkd->bqnd", p, vt)
    return o / p.sum(-1).transpose(0, 2, 1)[..., None]

  out = jax.lax.map(one, qc).swapaxes(0, 1).reshape(b, -1, n, d)
  return out[:, :lq].astype(q.dtype)


def local_attention(q, k, v, kv_lengths=None, implementation: str = "xla",
                    block_sizes=DEFAULT_BLOCK_SIZES, interpret: bool | None = None):
  """One backend's call on arrays it sees whole (one device's shard under shard_map)."""
  if implementation == "xla" and runs_in_chunks(q.shape[1]):
    return chunked_attention(q, k, v, kv_lengths, balanced_chunk(q.shape[1]))
  if implementation == "xla" or implementation == "cudnn":
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=kv_lengths,
                                        implementation=implementation)
  if implementation == "splash":
    return splash_attention(q, k, v, kv_lengths, block_sizes, interpret)
  raise ValueError(f"attention implementation {implementation!r}: expected one of {IMPLEMENTATIONS}")


def check_backend(implementation: str, mesh=None) -> str:
  """The platform a program on `mesh` (None: the default backend) compiles for; a one-line
  ValueError for a backend that cannot run `implementation` there."""
  platform = sharding.platform(mesh)
  if implementation == "splash" and platform not in ("tpu", "cpu"):
    raise ValueError(f"model.attention='splash' is the TPU Pallas kernel; on {platform} use "
                     "'cudnn' (NVIDIA GPUs) or 'xla'")
  return platform


def _parts(x) -> tuple[jax.Array, ...]:
  parts = tuple(x) if isinstance(x, (tuple, list)) else (x,)
  return tuple(p.astype(parts[0].dtype) for p in parts)


def attention(q: jax.Array, k: jax.Array | Sequence[jax.Array], v: jax.Array | Sequence[jax.Array],
              kv_lengths: jax.Array | None = None, implementation: str = "xla", *,
              block_sizes=DEFAULT_BLOCK_SIZES, context_parallel: str = "all_gather") -> jax.Array:
  """softmax(q k^T / sqrt(D)) v. q (B, Lq, N, D); k, v (B, Lk, N, D) or parts along length;
  kv_lengths (B,) int32 valid keys of the concatenation.

  Inside `activation_sharding` the kernel (and any backend under Ulysses) runs under shard_map
  on the mesh; otherwise XLA partitions the call, K/V constrained whole along length. Splash
  outside one refuses on a multi-device TPU host (see the module docstring).
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation {implementation!r}: expected one of "
                     f"{IMPLEMENTATIONS}")
  cp.check_mode(context_parallel)
  k_parts, v_parts = _parts(k), _parts(v)
  active = sharding.active()
  mesh = active[0] if active else None
  platform = check_backend(implementation, mesh) if implementation == "splash" else None
  if implementation == "splash" and active is None and platform == "tpu" and \
      jax.device_count() > 1:
    raise ValueError(f"model.attention='splash' on {jax.device_count()} TPU devices runs under "
                     "shard_map on the model's mesh: build the model with one "
                     "(create_model(..., mesh=), load_run) or call it inside "
                     "sharding.activation_sharding(mesh, rules)")
  # The kernel compiles for the mesh's chips: Mosaic on TPU (also deviceless AOT), else interpreted.
  local = functools.partial(local_attention, implementation=implementation,
                            block_sizes=tuple(block_sizes), interpret=platform != "tpu")
  if active is not None and (implementation == "splash" or context_parallel == "ulysses"):
    return cp.sharded_attention(local, q, k_parts, v_parts, kv_lengths, context_parallel, *active)
  cat = lambda xs: sharding.constrain(xs[0] if len(xs) == 1 else jnp.concatenate(xs, 1),
                                      KV_GATHERED)
  return local(q, cat(k_parts), cat(v_parts), kv_lengths)


def aipa_attention(q_vid, k_vid, v_vid, q_ref, k_ref, v_ref, ref_lengths, **options):
  """Asymmetric identity-preserving attention.

  Reference queries attend only to the valid reference keys; video queries attend to
  [video ; valid references]. Valid references must come first in the reference sequence
  (`ref_lengths` = valid reference tokens per example). Two calls: no FLOPs are spent on
  the reference->video block that a masked joint attention would compute and discard.
  `options`: attention()'s keyword arguments (attention_options(cfg)).
  Returns (video_out (B, Lv, N, D), ref_out (B, Lr, N, D)).
  """
  lv = q_vid.shape[1]
  # An example with no valid references still gets one (ignored) key so no row is all-masked.
  ref_out = attention(q_ref, k_ref, v_ref, jnp.maximum(ref_lengths, 1), **options)
  vid_out = attention(q_vid, (k_vid, k_ref), (v_vid, v_ref), lv + ref_lengths, **options)
  return vid_out, ref_out
