"""Attention as pure functions: one dense call per (query set, key set), padding by lengths.

Tensors are (B, L, N, D). Padding is expressed as key lengths (valid keys form a prefix), never as
a dense (L, L) mask, so every backend can skip or cheaply mask the padded tail:
- "xla":   jax.nn.dot_product_attention(implementation="xla"), any backend (CPU default);
- "cudnn": the cuDNN fused flash kernel on NVIDIA GPUs;
- "splash": Pallas splash attention on TPU (segment ids carry the padding).
All three compute softmax(q k^T / sqrt(D)) v over the first `kv_lengths[b]` keys.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla", "cudnn", "splash")


def attention(q: jax.Array, k: jax.Array, v: jax.Array, kv_lengths: jax.Array | None = None,
              implementation: str = "xla") -> jax.Array:
  """softmax(q k^T / sqrt(D)) v. q (B, Lq, N, D); k, v (B, Lk, N, D); kv_lengths (B,) int32."""
  if implementation == "xla" or implementation == "cudnn":
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=kv_lengths,
                                        implementation=implementation)
  if implementation == "splash":
    return _splash_attention(q, k, v, kv_lengths)
  raise ValueError(f"attention implementation {implementation!r}: expected one of {IMPLEMENTATIONS}")


def _splash_attention(q, k, v, kv_lengths):
  """TPU Pallas splash attention; padded keys get segment id 1, queries segment id 0."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  b, lq, n, d = q.shape
  lk = k.shape[1]
  mask = sm.MultiHeadMask([sm.FullMask((lq, lk)) for _ in range(n)])
  kernel = sk.make_splash_mha(mask, head_shards=1, q_seq_shards=1)
  q_seg = jnp.zeros((b, lq), jnp.int32)
  if kv_lengths is None:
    kv_seg = jnp.zeros((b, lk), jnp.int32)
  else:
    kv_seg = (jnp.arange(lk)[None, :] >= kv_lengths[:, None]).astype(jnp.int32)
  scale = d ** -0.5

  def one(qb, kb, vb, qs, ks):  # splash works on (N, L, D) per example
    seg = sk.SegmentIds(q=qs, kv=ks)
    return kernel((qb * scale).swapaxes(0, 1), kb.swapaxes(0, 1), vb.swapaxes(0, 1),
                  segment_ids=seg).swapaxes(0, 1)

  return jax.vmap(one)(q, k, v, q_seg, kv_seg)


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
