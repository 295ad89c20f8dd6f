"""Bootstrap 95% intervals over identities (a cluster bootstrap).

Clips of one identity (across seeds, prompts, views) are not independent, so the resampling unit
is the identity: each replicate draws identities with replacement and takes the mean over all
values of the drawn identities (identities weighted by their value counts, as the point
estimate is). Deterministic under `seed`.
"""
from __future__ import annotations

import numpy as np

LEVEL = 0.95


def mean_ci(values, groups, n_boot: int = 2000, seed: int = 0,
            level: float = LEVEL) -> dict:
  """-> {"mean", "ci95": [lo, hi], "n", "groups"} for values (N,) grouped by groups (N,).
  NaN values (e.g. a view bin a clip never shows) are left out. With one group the interval
  collapses to the mean (there is nothing to resample)."""
  values = np.asarray(values, np.float64)
  groups = np.asarray(groups)
  if values.shape != groups.shape:
    raise ValueError(f"values {values.shape} and groups {groups.shape}: expected equal shapes")
  keep = ~np.isnan(values)
  values, groups = values[keep], groups[keep]
  if values.size == 0:
    return {"mean": None, "ci95": [None, None], "n": 0, "groups": 0}
  names, idx = np.unique(groups, return_inverse=True)
  sums = np.bincount(idx, weights=values, minlength=len(names))
  counts = np.bincount(idx, minlength=len(names)).astype(np.float64)
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, len(names), size=(n_boot, len(names)))
  stats = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
  alpha = (1.0 - level) / 2
  lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
  return {"mean": float(values.mean()), "ci95": [float(lo), float(hi)], "n": int(values.size),
          "groups": int(len(names))}


def paired_difference(a, b, groups, n_boot: int = 2000, seed: int = 0,
                      level: float = LEVEL) -> dict:
  """The mean of b - a over paired values (the same clip under two arms: same identity, prompt
  and seed) with a cluster bootstrap interval over identities -> {"mean", "ci95", "n", "groups",
  "a", "b"} (a and b: the two arms' means over the pairs both define). Pairs where either value
  is NaN are left out."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"paired values {a.shape} and {b.shape}: expected equal shapes")
  keep = ~(np.isnan(a) | np.isnan(b))
  out = mean_ci((b - a)[keep], np.asarray(groups)[keep], n_boot, seed, level)
  out["a"] = float(a[keep].mean()) if keep.any() else None
  out["b"] = float(b[keep].mean()) if keep.any() else None
  return out
