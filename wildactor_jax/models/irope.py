"""I-RoPE: identity-aware 3D RoPE position ids for reference tokens (pure functions).

Video token (f, h, w) sits at (f, h, w), f < T. Reference i of type face sits at temporal
position T + face_offset + stride * i, reference j of type body (a three-view sheet is a body)
at T + body_offset + stride * j, where i / j count only valid references of that type, in order.
Reference spatial positions start at the video grid's size: rows H.. H + h_ref - 1, columns
W .. W + w_ref - 1 (diagonally outside the video grid).

Without I-RoPE (the paper's ablation) every reference reuses the video's position range: temporal
position 0 (the first frame) and the video's own spatial grid.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from wildactor_jax.models.rope import check_positions_fit

FACE, BODY = 0, 1


def farthest_temporal_position(t: int, r: int, face_offset: int, body_offset: int,
                               stride: int) -> int:
  """The largest temporal position I-RoPE can give one of r references after t latent frames."""
  return t + max(face_offset, body_offset) + stride * (r - 1)


def farthest_positions(video_grid: tuple[int, int, int], ref_grid: tuple[int, int], r: int, *,
                       irope: bool = True, face_offset: int = 4, body_offset: int = 128,
                       stride: int = 4) -> tuple[int, int, int]:
  """The largest (t, h, w) position ids `reference_positions` can give r references of a video
  of token grid (T, H, W); each must index the RoPE table."""
  t, hv, wv = video_grid
  hr, wr = ref_grid
  if not irope:
    return t - 1, hr - 1, wr - 1
  return (farthest_temporal_position(t, r, face_offset, body_offset, stride),
          hv + hr - 1, wv + wr - 1)


def reference_positions(ref_types: jax.Array, ref_mask: jax.Array, video_grid: tuple[int, int, int],
                        ref_grid: tuple[int, int], *, irope: bool = True, face_offset: int = 4,
                        body_offset: int = 128, stride: int = 4,
                        max_len: int = 1024) -> jax.Array:
  """ref_types/ref_mask (B, R) -> position ids (B, R * h_ref * w_ref, 3) int32.

  Raises ValueError (at trace time: shapes are static) if any possible position falls beyond the
  RoPE table.
  """
  t, hv, wv = video_grid
  hr, wr = ref_grid
  b, r = ref_types.shape
  rows, cols = np.meshgrid(np.arange(hr), np.arange(wr), indexing="ij")
  check_positions_fit(
      farthest_positions(video_grid, ref_grid, r, irope=irope, face_offset=face_offset,
                         body_offset=body_offset, stride=stride),
      max_len, "references (I-RoPE)" if irope else "references (irope=False)")
  if not irope:
    temporal = jnp.zeros((b, r), jnp.int32)
    spatial = np.stack([rows, cols], -1).reshape(-1, 2)
  else:
    is_face = (ref_types == FACE) & ref_mask
    is_body = (ref_types != FACE) & ref_mask
    rank = jnp.where(is_face, jnp.cumsum(is_face, axis=1) - 1, jnp.cumsum(is_body, axis=1) - 1)
    offset = jnp.where(ref_types == FACE, face_offset, body_offset)
    temporal = (t + offset + stride * jnp.maximum(rank, 0)).astype(jnp.int32)
    spatial = np.stack([rows + hv, cols + wv], -1).reshape(-1, 2)
  n = hr * wr
  temporal = jnp.broadcast_to(temporal[:, :, None, None], (b, r, n, 1))
  spatial = jnp.broadcast_to(jnp.asarray(spatial, jnp.int32)[None, None], (b, r, n, 2))
  return jnp.concatenate([temporal, spatial], axis=-1).reshape(b, r * n, 3)


def valid_first_order(ref_mask: jax.Array) -> jax.Array:
  """A stable permutation (B, R) putting valid references first (padding becomes a length)."""
  return jnp.argsort(~ref_mask, axis=1, stable=True)
