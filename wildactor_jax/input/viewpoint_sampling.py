"""Viewpoint-adaptive Monte Carlo choice of reference images (pure numpy).

The rule (our reading of WildActor's sampler; the release does not ship it, REFERENCE.md s.1):

  Each candidate i has a yaw_i in degrees. Angular distance is taken on the circle,
  d(a, b) = min(|a - b| mod 360, 360 - |a - b| mod 360), so 170 and -170 are 20 degrees apart.

  1. Frontal de-biasing. The pool's density at each candidate is a wrapped Gaussian kernel
     estimate, density_i = sum_j exp(-d(yaw_i, yaw_j)^2 / (2 bandwidth^2)) (the candidate counts
     itself, so density_i >= 1). Start weights are w_i = 1 / density_i: a view that many
     candidates share (typically the frontal one) is no more likely, as a view, than a rare one.
  2. Pick one candidate with probability w_i / sum(w).
  3. Viewpoint repulsion. Multiply the weight of every remaining candidate whose distance to the
     picked yaw is strictly below `delta` by `decay` (a candidate exactly delta away is kept).
  4. Repeat 2-3 without replacement until k are picked (or the pool is empty). When every
     remaining weight has decayed to zero (decay = 0), the remaining candidates' start weights
     are used instead, so k is always honoured when the pool is large enough.

Released defaults: delta = 25 degrees, decay = 0.25; bandwidth defaults to delta.
`mode="uniform"` is the paper's ablation: k candidates uniformly without replacement.
Randomness comes only from the explicit `np.random.Generator`, so a seed reproduces a choice.
"""
from __future__ import annotations

import numpy as np

DELTA = 25.0
DECAY = 0.25
MODES = ("adaptive", "uniform")


def circular_distance(a, b) -> np.ndarray:
  """Angular distance in degrees on the circle, in [0, 180]; broadcasts."""
  diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) % 360.0
  return np.minimum(diff, 360.0 - diff)


def debias_weights(yaws, bandwidth: float = DELTA) -> np.ndarray:
  """Start weights 1 / density(yaw_i) from a wrapped Gaussian kernel over the pool."""
  yaws = np.asarray(yaws, np.float64)
  if bandwidth <= 0:
    raise ValueError(f"bandwidth {bandwidth}: expected > 0 degrees")
  dist = circular_distance(yaws[:, None], yaws[None, :])
  density = np.exp(-0.5 * (dist / bandwidth) ** 2).sum(axis=1)
  return 1.0 / density


def sample_views(yaws, k: int, rng: np.random.Generator, *, mode: str = "adaptive",
                 delta: float = DELTA, decay: float = DECAY, debias: bool = True,
                 bandwidth: float | None = None) -> np.ndarray:
  """Indices (int64, in pick order) of min(k, len(yaws)) distinct candidates.

  mode: "adaptive" (the rule in the module docstring) or "uniform".
  delta: repulsion radius in degrees; decay: weight factor in [0, 1] inside it (1 = no repulsion).
  debias: start from 1 / density weights (True) or from equal weights (False).
  bandwidth: kernel width of the density estimate in degrees (default: delta, or 25 if delta is 0).
  """
  yaws = np.asarray(yaws, np.float64).reshape(-1)
  n = yaws.shape[0]
  k = int(min(max(k, 0), n))
  if mode not in MODES:
    raise ValueError(f"mode {mode!r}: expected one of {MODES}")
  if not 0.0 <= decay <= 1.0:
    raise ValueError(f"decay {decay}: expected a value in [0, 1]")
  if k == 0:
    return np.zeros((0,), np.int64)
  if mode == "uniform":
    return rng.choice(n, size=k, replace=False).astype(np.int64)
  if not np.all(np.isfinite(yaws)):
    raise ValueError("yaws: expected finite angles in degrees")
  base = debias_weights(yaws, bandwidth or delta or DELTA) if debias else np.ones(n)
  weights = base.copy()
  available = np.ones(n, bool)
  picks = []
  for _ in range(k):
    w = np.where(available, weights, 0.0)
    if w.sum() <= 0.0:  # everything left was decayed to zero: fall back to the start weights
      w = np.where(available, base, 0.0)
    pick = int(rng.choice(n, p=w / w.sum()))
    picks.append(pick)
    available[pick] = False
    near = circular_distance(yaws, yaws[pick]) < delta
    weights = np.where(near, weights * decay, weights)
  return np.asarray(picks, np.int64)


def mean_pairwise_distance(yaws) -> float:
  """Mean circular distance over all pairs (the spread of a chosen set); 0 for fewer than 2."""
  yaws = np.asarray(yaws, np.float64).reshape(-1)
  if yaws.size < 2:
    return 0.0
  dist = circular_distance(yaws[:, None], yaws[None, :])
  return float(dist[np.triu_indices(yaws.size, 1)].mean())
