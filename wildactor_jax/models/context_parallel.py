"""Attention under shard_map on the model's mesh, with context parallelism for long clips.

Inside `activation_sharding(mesh, rules)` (the train, eval and denoise steps) a sharded attention
call runs one local attention per device, laid out by the same logical rules as the activations
around it, so nothing is resharded on the way in:
- batch over the "batch" rule's axes (data, fsdp), heads over the "heads" rule's axes (tensor);
- queries along length over the "length" rule's axes (context). `model.context_parallel` says
  how their keys/values meet them:
  all_gather: keys/values enter whole along length (XLA all-gathers the sequence-sharded video
    K/V over `context`), each device attends its slice of queries to every key;
  ulysses: an all-to-all turns sequence shards into head shards (DeepSpeed-Ulysses): each device
    then holds every query and key for N / (tensor * context) heads, runs the kernel, and a second
    all-to-all turns the output back. It moves 4 activations' worth of bytes per call instead of
    gathering K/V, and needs the context degree to divide the heads per tensor shard.
A dimension an axis does not divide (a batch of 2 on 8 fsdp devices, 16 text tokens on 3 context
devices) stays whole on that axis and its work repeats there, so every mesh layout runs.

Keys/values come as parts concatenated along length ([video ; references], [video ; cached
reference K/V]): under Ulysses a sequence-sharded part is all-to-all'ed and a whole part (too
short to split) only has its heads sliced, so small parts never cross the network.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from wildactor_jax.sharding import axes_of, fit_spec, logical_to_spec

MODES = ("all_gather", "ulysses")
QUERY_AXES = ("batch", "length", "heads", None)

LocalAttention = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def check_mode(mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f"model.context_parallel {mode!r}: expected one of {MODES}")
  return mode


def _degree(mesh, axes: Sequence[str]) -> int:
  return math.prod(getattr(mesh, "shape", mesh)[a] for a in axes)


def local_shape(q_shape: Sequence[int], mode: str, mesh, rules) -> tuple[int, int, int]:
  """(batch, query length, heads) of one device's kernel call for queries of `q_shape` (B, Lq,
  N, D); keys keep their whole length in both modes. mesh: a Mesh or a mapping of axis sizes."""
  b, lq, n, _ = q_shape
  spec = fit_spec(logical_to_spec(QUERY_AXES, rules), q_shape, mesh)
  batch, context, tensor = (_degree(mesh, axes_of(e)) for e in spec[:3])
  if mode == "ulysses":
    return b // batch, lq, n // tensor // context
  return b // batch, lq // context, n // tensor


def check_ulysses_heads(num_heads: int, mesh: Mesh, rules) -> None:
  """One-line error when the context degree does not divide the heads each tensor shard holds."""
  spec = logical_to_spec(QUERY_AXES, rules)
  context = _degree(mesh, axes_of(spec[1]))
  tensor = _degree(mesh, axes_of(fit_spec(spec, (1, 1, num_heads, 1), mesh)[2]))
  if (num_heads // tensor) % context:
    raise ValueError(
        f"model.context_parallel='ulysses': the context degree {context} does not divide the "
        f"{num_heads // tensor} heads per tensor shard ({num_heads} heads / tensor degree {tensor});"
        f" use context_parallel='all_gather' or a context degree dividing the heads")


def sharded_attention(local: LocalAttention, q: jax.Array, k_parts: Sequence[jax.Array],
                      v_parts: Sequence[jax.Array], kv_lengths: jax.Array | None, mode: str,
                      mesh: Mesh, rules) -> jax.Array:
  """`local(q, k, v, kv_lengths)` on every device's shard; q (B, Lq, N, D), parts (B, Li, N, D)."""
  check_mode(mode)
  b, lq, n, _ = q.shape
  if mode == "ulysses":
    check_ulysses_heads(n, mesh, rules)
  q_spec = fit_spec(logical_to_spec(QUERY_AXES, rules), q.shape, mesh)
  batch, seq, heads = q_spec[0], axes_of(q_spec[1]), q_spec[2]
  context = _degree(mesh, seq)
  ulysses = mode == "ulysses" and context > 1
  axis = seq[0] if len(seq) == 1 else seq
  # all_gather: K/V whole along length. ulysses: sequence-sharded where the length divides.
  split = [ulysses and part.shape[1] % context == 0 for part in k_parts]
  kv_specs = [P(batch, q_spec[1] if s else None, heads, None) for s in split]
  lengths = (jnp.full((b,), sum(p.shape[1] for p in k_parts), jnp.int32) if kv_lengths is None
             else kv_lengths.astype(jnp.int32))

  def to_heads(x, sharded: bool):
    """(B, L/c, N_t, D) -> (B, L, N_t/c, D); a whole (B, L, N_t, D) part keeps its own heads."""
    if sharded:
      return jax.lax.all_to_all(x, axis, split_axis=2, concat_axis=1, tiled=True)
    h = x.shape[2] // context
    return jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(axis) * h, h, axis=2)

  def body(q, lengths, *kv):
    ks, vs = list(kv[:len(k_parts)]), list(kv[len(k_parts):])
    if ulysses:
      q = to_heads(q, True)
      ks = [to_heads(x, s) for x, s in zip(ks, split)]
      vs = [to_heads(x, s) for x, s in zip(vs, split)]
    cat = lambda xs: xs[0] if len(xs) == 1 else jnp.concatenate(xs, axis=1)
    out = local(q, cat(ks), cat(vs), lengths)
    if ulysses:  # back from head shards to sequence shards
      out = jax.lax.all_to_all(out, axis, split_axis=1, concat_axis=2, tiled=True)
    return out

  return jax.shard_map(body, mesh=mesh, in_specs=(q_spec, P(batch), *kv_specs, *kv_specs),
                       out_specs=q_spec, check_vma=False)(q, lengths, *k_parts, *v_parts)
