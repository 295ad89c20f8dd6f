"""Spatially tiled VAE decoding: decode overlapping latent tiles and blend them in pixel space.

Activation memory of the decoder grows with the frame area (its last stages run at full
resolution on up to 4 frames per chunk); tiles bound it. Each tile is decoded over ALL frames with
the normal causal stream, so temporal behaviour is unchanged; only the spatial receptive field is
cut at tile borders, which the linear cross-fade over the overlap hides (as diffusers' tiling).
Tiles have one shape (the last row/column is aligned to the far edge), so one compilation serves
all of them.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
  """Start offsets covering [0, size) with tiles of `tile` that overlap by at least `overlap`."""
  if tile >= size:
    return [0]
  if not 0 <= overlap < tile:
    raise ValueError(f"tile overlap {overlap} must be in [0, {tile})")
  starts = list(range(0, size - tile, tile - overlap))
  return starts + [size - tile]


def blend_weights(starts: list[int], tile: int, scale: int) -> list[np.ndarray]:
  """Per-tile 1-D pixel weights: linear ramps over the overlap with each neighbour, 1 elsewhere."""
  out = []
  length = tile * scale
  for k, a in enumerate(starts):
    w = np.ones(length, np.float32)
    if k > 0:  # ramp up over the overlap with the previous tile
      n = (starts[k - 1] + tile - a) * scale
      if n > 0:
        w[:n] = np.minimum(w[:n], (np.arange(n) + 0.5) / n)
    if k + 1 < len(starts):  # ramp down over the overlap with the next tile
      n = (a + tile - starts[k + 1]) * scale
      if n > 0:
        w[length - n:] = np.minimum(w[length - n:], 1.0 - (np.arange(n) + 0.5) / n)
    out.append(w)
  return out


def tiled_decode(decode: Callable[[jax.Array], jax.Array], latents: jax.Array,
                 tile: tuple[int, int], overlap: tuple[int, int], scale: int) -> jax.Array:
  """decode: (B, T', th, tw, z) -> (B, T, th*s, tw*s, 3). Returns the blended full video."""
  _, _, h, w, _ = latents.shape
  th, tw = min(tile[0], h), min(tile[1], w)
  rows, cols = tile_starts(h, th, overlap[0]), tile_starts(w, tw, overlap[1])
  wr, wc = blend_weights(rows, th, scale), blend_weights(cols, tw, scale)
  acc = norm = None
  for i, r in enumerate(rows):
    for j, c in enumerate(cols):
      pix = decode(latents[:, :, r:r + th, c:c + tw])
      weight = jnp.asarray(wr[i][:, None] * wc[j][None, :])[None, None, :, :, None]
      if acc is None:
        b, t, _, _, ch = pix.shape
        acc = jnp.zeros((b, t, h * scale, w * scale, ch), jnp.float32)
        norm = jnp.zeros((1, 1, h * scale, w * scale, 1), jnp.float32)
      sl = (slice(None), slice(None), slice(r * scale, (r + th) * scale),
            slice(c * scale, (c + tw) * scale))
      acc = acc.at[sl].add(pix.astype(jnp.float32) * weight)
      norm = norm.at[sl].add(weight)
  return (acc / norm).astype(pix.dtype)
