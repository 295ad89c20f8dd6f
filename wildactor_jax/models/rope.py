"""Wan's 3D rotary position embedding, as pure functions over integer position ids.

The head dimension is split into temporal / height / width parts (128 -> 44 / 42 / 42, i.e.
h = w = 2 * (head_dim // 6), t = the rest). Each part rotates interleaved pairs (x[2i], x[2i+1])
by angle pos * theta^(-2i / part_dim), exactly as diffusers' `WanRotaryPosEmbed`. The cos/sin
tables are computed in float64 on the host (as diffusers does) and gathered by position id, so
positions beyond the video grid (I-RoPE's reference offsets) cost nothing extra.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def axis_dims(head_dim: int) -> tuple[int, int, int]:
  h = w = 2 * (head_dim // 6)
  return head_dim - h - w, h, w


@functools.lru_cache(maxsize=16)
def cos_sin_tables(head_dim: int, max_len: int, theta: float):
  """Per-axis (cos, sin) tables, each (max_len, part_dim // 2) float32, from float64 angles."""
  tables = []
  for dim in axis_dims(head_dim):
    inv_freq = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64)[: dim // 2] / dim))
    angles = np.outer(np.arange(max_len, dtype=np.float64), inv_freq)
    tables.append((np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)))
  return tuple(tables)


def check_positions_fit(max_position: tuple[int, int, int], max_len: int, what: str) -> None:
  """Static check: every position id must index the table (an error, not a silent wrap)."""
  for axis, m in zip("thw", max_position):
    if m >= max_len:
      raise ValueError(f"{what}: {axis}-position {m} is beyond the RoPE table length {max_len}; "
                       "reduce the offsets/stride or raise rope_max_seq_len")


def rope_cos_sin(positions: jax.Array, head_dim: int, max_len: int = 1024,
                 theta: float = 10000.0) -> tuple[jax.Array, jax.Array]:
  """positions (..., 3) int (t, h, w) -> cos, sin (..., head_dim // 2) float32."""
  tables = cos_sin_tables(head_dim, max_len, theta)
  cos = [jnp.asarray(c)[positions[..., i]] for i, (c, _) in enumerate(tables)]
  sin = [jnp.asarray(s)[positions[..., i]] for i, (_, s) in enumerate(tables)]
  return jnp.concatenate(cos, axis=-1), jnp.concatenate(sin, axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates interleaved pairs of x (B, L, N, D) by cos/sin (B or 1, L, D // 2)."""
  x32 = x.astype(jnp.float32).reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
  x1, x2 = x32[..., 0], x32[..., 1]
  c, s = cos[:, :, None, :], sin[:, :, None, :]
  out = jnp.stack([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)
  return out.reshape(x.shape).astype(x.dtype)


def video_positions(t: int, h: int, w: int) -> np.ndarray:
  """(t*h*w, 3) position ids of a video token grid, in (frame, row, column) raster order."""
  grid = np.stack(np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij"), axis=-1)
  return grid.reshape(-1, 3).astype(np.int32)


def jittered_video_positions(key: jax.Array, batch: int, grid: tuple[int, int, int],
                             temporal_range: int) -> jax.Array:
  """Randomised video positions (B, t*h*w, 3) int32 for pre-training a backbone whose RoPE must
  cover farther positions than its clips span (randomised positional encodings, Ruoss et al.,
  ACL 2023). Per example, the t frames take a sorted draw of distinct temporal positions from
  [0, temporal_range), and each frame's grid is shifted by its own random (row, column) offset
  in [0, h] x [0, w]. Within a frame the grid stays regular; across frames the same content then
  sits at relative offsets up to the range in time and up to the grid size in space. Every
  position is below max(temporal_range, 2 h, 2 w)."""
  t, h, w = grid
  if temporal_range < t:
    raise ValueError(f"temporal range {temporal_range}: expected >= the clip's {t} latent frames")
  k_t, k_s = jax.random.split(key)
  frames = jax.vmap(lambda k: jnp.sort(jax.random.choice(k, temporal_range, (t,), replace=False)))(
      jax.random.split(k_t, batch))                                          # (B, t)
  shift = jax.random.randint(k_s, (batch, t, 2), 0, jnp.asarray([h + 1, w + 1]))  # (B, t, 2)
  base = jnp.asarray(video_positions(t, h, w)).reshape(t, h * w, 3)
  pos = jnp.concatenate([jnp.broadcast_to(frames[:, :, None, None], (batch, t, h * w, 1)),
                         base[None, :, :, 1:] + shift[:, :, None, :]], axis=-1)
  return pos.reshape(batch, t * h * w, 3).astype(jnp.int32)
