"""A simple, documented appearance-similarity score for the synthetic actors (the demo report).

Each synthetic actor has a fixed palette (skin, hair, shirt and pattern, trousers, shoes). We
take the actor's palette from its body reference renders: a colour histogram (8 levels per
channel) of the pixels that are not the renders' flat background. Its distinctive part is what
it has beyond the mean palette of the other actors: d_A = max(p_A - mean_{B != A} p_B, 0).
A clip's histogram h covers all its pixels (background included). The score of a clip for
actor A is the share of A's distinctive colour mass the clip shows,
    s_A = sum_b min(h_b, d_A,b) / sum_b d_A,b,
and its identity margin is s_A minus the mean of s_B over the other actors; `top1` says whether
A scores highest. Ground-truth clips of A score clearly above zero; a generated clip that
carries A's identity should too, and one with no identity information should sit near zero. It
sees colours only, not shape or layout: a coarse proxy for identity transfer, not ArcFace.
"""
from __future__ import annotations

import numpy as np

LEVELS = 8


def histogram(pixels: np.ndarray) -> np.ndarray:
  """(N, 3) uint8 -> (LEVELS^3,) normalised colour histogram."""
  q = (pixels.astype(np.int32) * LEVELS) // 256
  idx = (q[:, 0] * LEVELS + q[:, 1]) * LEVELS + q[:, 2]
  h = np.bincount(idx, minlength=LEVELS ** 3).astype(np.float64)
  return h / max(h.sum(), 1.0)


def palette(renders: list[np.ndarray], tolerance: int = 12) -> np.ndarray:
  """Histogram of the non-background pixels of (H, W, 3) uint8 renders (background = the
  colour of the top-left corner, within `tolerance`)."""
  fg = []
  for im in renders:
    bg = im[0, 0].astype(np.int32)
    mask = np.abs(im.astype(np.int32) - bg).max(axis=-1) > tolerance
    fg.append(im[mask])
  return histogram(np.concatenate(fg) if fg else np.zeros((0, 3), np.uint8))


def clip_histogram(frames: np.ndarray) -> np.ndarray:
  return histogram(frames.reshape(-1, 3))


def distinctive(palettes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """d_A = max(p_A - mean of the other actors' palettes, 0), per actor."""
  out = {}
  for a, p in palettes.items():
    others = [q for b, q in palettes.items() if b != a]
    out[a] = np.maximum(p - (np.mean(others, axis=0) if others else 0.0), 0.0)
  return out


def scores(frames: np.ndarray, distinct: dict[str, np.ndarray]) -> dict[str, float]:
  h = clip_histogram(frames)
  return {a: float(np.minimum(h, d).sum() / max(d.sum(), 1e-12)) for a, d in distinct.items()}


def identity_margin(frames: np.ndarray, actor: str, distinct: dict[str, np.ndarray]) -> dict:
  """{"score": s_A, "margin": s_A - mean_{B != A} s_B, "top1": A scores highest}."""
  s = scores(frames, distinct)
  others = [v for a, v in s.items() if a != actor]
  return {"score": s[actor], "margin": s[actor] - (float(np.mean(others)) if others else 0.0),
          "top1": bool(max(s, key=s.get) == actor)}
