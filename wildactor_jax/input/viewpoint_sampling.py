"""Viewpoint-adaptive Monte Carlo choice of reference images (pure numpy).

The rule (our reading of WildActor's sampler; the release does not ship it, docs/method.md s.1):

  Each candidate i has a yaw_i in degrees. Angular distance is taken on the circle,
  d(a, b) = min(|a - b| mod 360, 360 - |a - b| mod 360), so 170 and -170 are 20 degrees apart.

  1. Start weights (switch `debias`, on by default). Frontal de-biasing: the pool's density at
     each candidate is a wrapped Gaussian kernel estimate, density_i = sum_j exp(-d(yaw_i,
     yaw_j)^2 / (2 bandwidth^2)) (the candidate counts itself, so density_i >= 1), and
     w_i = 1 / density_i: a view that many candidates share (typically the frontal one) is no
     more likely, as a view, than a rare one. With debias off, w_i = 1.
  2. Pick one candidate with probability w_i / sum(w).
  3. Angular decay (switch `mode`: "adaptive" on, "uniform" off). Multiply the weight of every
     remaining candidate whose distance to the picked yaw is strictly below `delta` by `decay`
     (a candidate exactly delta away is kept).
  4. Repeat 2-3 without replacement until k are picked (or the pool is empty). When every
     remaining weight has decayed to zero (decay = 0), the remaining candidates' start weights
     are used instead, so k is always honoured when the pool is large enough.

The two switches are independent, so an ablation changes one mechanism: mode="uniform" drops the
paper's angular decay and keeps the start weights; debias=False as well gives k candidates
uniformly without replacement (the paper's random reference sampling).
Released defaults: delta = 25 degrees, decay = 0.25; bandwidth defaults to delta.

Face references must show a face: `usable_faces` drops a face seen from behind (view "back", or
yaw more than FACE_MAX_YAW from the camera) or barely visible (visibility below
MIN_FACE_VISIBILITY, where the record has it) before any sampling. Bodies seen from behind stay:
they are the views the rule is meant to reach.
Randomness comes only from the explicit `np.random.Generator`, so a seed reproduces a choice.
"""
from __future__ import annotations

import numpy as np

from wildactor_jax.input.records import VIEWS

DELTA = 25.0
DECAY = 0.25
MODES = ("adaptive", "uniform")
# A face turned more than 90 degrees from the camera shows the back of the head.
FACE_MAX_YAW = 90.0
# Visibility: the fraction of the face crop inside the frame, times how much of the face is
# turned to the camera (the Actor-18M row's `visibility`); below this it is no face reference.
MIN_FACE_VISIBILITY = 0.25
_BACK = VIEWS.index("back")


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


def usable_faces(yaws, views=None, visibility=None, *, max_yaw: float = FACE_MAX_YAW,
                 min_visibility: float = MIN_FACE_VISIBILITY) -> np.ndarray:
  """Boolean mask of candidates that may serve as face references: not seen from behind (view
  index, into records.VIEWS, not "back"; circular distance to yaw 0 at most max_yaw) and, when
  visibility is given, at least min_visibility."""
  yaws = np.asarray(yaws, np.float64).reshape(-1)
  ok = circular_distance(yaws, 0.0) <= max_yaw
  if views is not None:
    ok &= np.asarray(views).reshape(-1) != _BACK
  if visibility is not None:
    ok &= np.asarray(visibility, np.float64).reshape(-1) >= min_visibility
  return ok


def sample_views(yaws, k: int, rng: np.random.Generator, *, mode: str = "adaptive",
                 delta: float = DELTA, decay: float = DECAY, debias: bool = True,
                 bandwidth: float | None = None) -> np.ndarray:
  """Indices (int64, in pick order) of min(k, len(yaws)) distinct candidates.

  mode: "adaptive" (angular decay on) or "uniform" (off); see the module docstring.
  delta: decay radius in degrees; decay: weight factor in [0, 1] inside it (1 = no decay).
  debias: start from 1 / density weights (True) or from equal weights (False), in either mode.
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
  if not np.all(np.isfinite(yaws)):
    raise ValueError("yaws: expected finite angles in degrees")
  base = debias_weights(yaws, bandwidth or delta or DELTA) if debias else np.ones(n)
  factor = decay if mode == "adaptive" else 1.0
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
    weights = np.where(near, weights * factor, weights)
  return np.asarray(picks, np.int64)


def mean_pairwise_distance(yaws) -> float:
  """Mean circular distance over all pairs (the spread of a chosen set); 0 for fewer than 2."""
  yaws = np.asarray(yaws, np.float64).reshape(-1)
  if yaws.size < 2:
    return 0.0
  dist = circular_distance(yaws[:, None], yaws[None, :])
  return float(dist[np.triu_indices(yaws.size, 1)].mean())
