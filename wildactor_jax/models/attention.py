"""Attention as pure functions: one dense call per (query set, key set), padding by lengths.

Tensors are (B, L, N, D). Padding is expressed as key lengths (valid keys form a prefix), never as
a dense (L, L) mask, so every backend can skip or cheaply mask the padded tail:
- "xla":   plain XLA, any backend (CPU default): long query sets run in query chunks (the
           logits of one chunk at a time), which is ~1.7x faster than one dense call on CPU and
           bounds the logits memory; short ones call jax.nn.dot_product_attention;
- "cudnn": the cuDNN fused flash kernel on NVIDIA GPUs;
- "splash": Pallas splash attention on TPU (segment ids carry the padding).
All three compute softmax(q k^T / sqrt(D)) v over the first `kv_lengths[b]` keys.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla", "cudnn", "splash")
QUERY_CHUNK = 256


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


def attention(q: jax.Array, k: jax.Array, v: jax.Array, kv_lengths: jax.Array | None = None,
              implementation: str = "xla") -> jax.Array:
  """softmax(q k^T / sqrt(D)) v. q (B, Lq, N, D); k, v (B, Lk, N, D); kv_lengths (B,) int32."""
  if implementation == "xla" and q.shape[1] > QUERY_CHUNK:
    return chunked_attention(q, k, v, kv_lengths, QUERY_CHUNK)
  if implementation == "xla" or implementation == "cudnn":
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=kv_lengths,
                                        implementation=implementation)
  if implementation == "splash":
    return _splash_attention(q, k, v, kv_lengths)
  raise ValueError(f"attention implementation {implementation!r}: expected one of {IMPLEMENTATIONS}")


def _splash_attention(q, k, v, kv_lengths, block: int = 128):
  """TPU Pallas splash attention; padded keys get segment id 1, queries segment id 0.

  Sequences are padded to the kernel's block size (padded queries are dropped, padded keys
  masked). Off TPU the kernel runs in Pallas interpret mode, which is how CPU tests check it.
  """
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  b, lq, n, d = q.shape
  lk = k.shape[1]
  pq, pk = -lq % block, -lk % block
  pad = lambda x, p: jnp.pad(x, ((0, 0), (0, p), (0, 0), (0, 0))) if p else x
  q, k, v = pad(q, pq), pad(k, pk), pad(v, pk)
  mask = sm.MultiHeadMask([sm.FullMask((lq + pq, lk + pk)) for _ in range(n)])
  kernel = sk.make_splash_mha(mask, head_shards=1, q_seq_shards=1,
                              interpret=jax.default_backend() != "tpu")
  lengths = jnp.full((b,), lk, jnp.int32) if kv_lengths is None else kv_lengths
  kv_seg = (jnp.arange(lk + pk)[None, :] >= lengths[:, None]).astype(jnp.int32)
  q_seg = jnp.zeros((b, lq + pq), jnp.int32)
  scale = d ** -0.5

  def one(qb, kb, vb, qs, ks):  # splash works on (N, L, D) per example
    return kernel((qb * scale).swapaxes(0, 1), kb.swapaxes(0, 1), vb.swapaxes(0, 1),
                  segment_ids=sk.SegmentIds(q=qs, kv=ks)).swapaxes(0, 1)

  return jax.vmap(one)(q, k, v, q_seg, kv_seg)[:, :lq]


def aipa_attention(q_vid, k_vid, v_vid, q_ref, k_ref, v_ref, ref_lengths,
                   implementation: str = "xla"):
  """Asymmetric identity-preserving attention.

  Reference queries attend only to the valid reference keys; video queries attend to
  [video ; valid references]. Valid references must come first in the reference sequence
  (`ref_lengths` = valid reference tokens per example). Two dense calls: no FLOPs are spent on
  the reference->video block that a masked joint attention would compute and discard.
  Returns (video_out (B, Lv, N, D), ref_out (B, Lr, N, D)).
  """
  lv = q_vid.shape[1]
  # An example with no valid references still gets one (ignored) key so no row is all-masked.
  ref_out = attention(q_ref, k_ref, v_ref, jnp.maximum(ref_lengths, 1), implementation)
  k = jnp.concatenate([k_vid, k_ref.astype(k_vid.dtype)], axis=1)
  v = jnp.concatenate([v_vid, v_ref.astype(v_vid.dtype)], axis=1)
  vid_out = attention(q_vid, k, v, lv + ref_lengths, implementation)
  return vid_out, ref_out
