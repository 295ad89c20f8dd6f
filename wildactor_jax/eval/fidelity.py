"""Sample fidelity: the Fréchet distance between two sets of embedder features (FID-style).

    d^2 = |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)

The cross term is computed in its symmetric form with eigendecompositions (numpy eigh), which
is exact and stays real and stable for the rank-deficient covariances a few hundred frames
give, unlike a general matrix square root of C_a C_b. A distance means something only next to
a reference: `real_split_distance` measures two disjoint halves of real frames the same way.
"""
from __future__ import annotations

import numpy as np


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((c + c.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
  """Squared Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
    raise ValueError(f"feature sets {a.shape} and {b.shape}: expected (N, D) and (M, D) with "
                     "N, M >= 2")
  mu_a, mu_b = a.mean(0), b.mean(0)
  ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  sa = _psd_sqrt(ca)
  cross = np.sqrt(np.clip(np.linalg.eigvalsh(sa @ cb @ sa), 0.0, None)).sum()
  d = np.sum((mu_a - mu_b) ** 2) + np.trace(ca) + np.trace(cb) - 2.0 * cross
  return float(max(d, 0.0))


def real_split_distance(features: np.ndarray, groups, seed: int = 0) -> tuple[float, np.ndarray]:
  """The distance between two disjoint halves of real features, split by group (clip), so
  frames of one clip never sit on both sides. -> (distance, boolean mask of half A)."""
  groups = np.asarray(groups)
  names = np.unique(groups)
  if len(names) < 4:
    raise ValueError(f"{len(names)} real clips: the real-split reference needs at least 4")
  rng = np.random.default_rng(seed)
  half = set(rng.permutation(names)[:len(names) // 2].tolist())
  mask = np.array([g in half for g in groups.tolist()])
  return frechet_distance(features[mask], features[~mask]), mask
