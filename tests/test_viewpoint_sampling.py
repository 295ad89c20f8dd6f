"""Viewpoint-adaptive reference sampler: reproducibility, spread, the delta/decay rule, the
separate de-biasing switch, and which faces may be references."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from wildactor_jax.input import viewpoint_sampling as vs
from wildactor_jax.input.records import VIEWS

ROOT = pathlib.Path(__file__).resolve().parents[1]


def frontal_heavy_pool(rng: np.random.Generator) -> np.ndarray:
  """40 near-frontal views and a handful of side and back views, like in-the-wild crops."""
  return np.concatenate([rng.normal(0.0, 8.0, 40), [90, -90, 75, -100, 180, 170, -150, 45]])


def test_reproducible_by_seed():
  pool = frontal_heavy_pool(np.random.default_rng(0))
  for mode in vs.MODES:
    a = vs.sample_views(pool, 5, np.random.default_rng(7), mode=mode)
    b = vs.sample_views(pool, 5, np.random.default_rng(7), mode=mode)
    c = vs.sample_views(pool, 5, np.random.default_rng(8), mode=mode)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(set(a.tolist())) == 5  # without replacement


def test_each_mechanism_spreads_views():
  """Angular decay (mode) and frontal de-biasing (debias) are separate switches; each spreads the
  chosen views on its own and most together."""
  pool = frontal_heavy_pool(np.random.default_rng(1))
  rng = np.random.default_rng(2)
  spread = {(mode, debias): np.mean([vs.mean_pairwise_distance(pool[vs.sample_views(
      pool, 3, rng, mode=mode, debias=debias)]) for _ in range(400)])
            for mode in vs.MODES for debias in (False, True)}
  random = spread["uniform", False]  # mostly three frontal crops, about 40 degrees apart
  assert spread["adaptive", False] > 1.5 * random, spread    # decay alone
  assert spread["uniform", True] > 1.5 * random, spread      # de-biasing alone
  assert spread["adaptive", True] > max(spread["adaptive", False], spread["uniform", True]) + 3.0
  assert spread["adaptive", True] > 70.0, spread


def test_mode_switches_only_the_decay():
  pool = frontal_heavy_pool(np.random.default_rng(3))
  for debias in (False, True):
    for seed in range(50):  # the first pick uses the start weights alone: same draw in both modes
      a = vs.sample_views(pool, 4, np.random.default_rng(seed), mode="adaptive", debias=debias)
      u = vs.sample_views(pool, 4, np.random.default_rng(seed), mode="uniform", debias=debias)
      assert a[0] == u[0]
  # With the decay off and equal start weights the choice is uniform without replacement.
  rng = np.random.default_rng(4)
  firsts = [vs.sample_views(pool[:6], 3, rng, mode="uniform", debias=False)[0] for _ in range(3000)]
  np.testing.assert_allclose(np.bincount(firsts, minlength=6) / 3000, 1 / 6, atol=0.03)
  # ...and decay=1 in adaptive mode is the same rule as mode="uniform", draw for draw.
  for seed in range(20):
    np.testing.assert_array_equal(
        vs.sample_views(pool, 5, np.random.default_rng(seed), decay=1.0),
        vs.sample_views(pool, 5, np.random.default_rng(seed), mode="uniform"))


def test_uniform_ablation_differs_from_the_default_in_the_sampler_only():
  from wildactor_jax.config_lib import load_config_file
  def flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
      out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return out
  base = flat(load_config_file(str(ROOT / "configs" / "wildactor_wan22_5b.py") + ":tiny").to_dict())
  ablation = flat(load_config_file(str(ROOT / "configs" / "ablation_uniform_sampling.py")
                                   + ":tiny").to_dict())
  assert {k for k in base.keys() | ablation.keys() if base.get(k) != ablation.get(k)} == {"data.sampler"}
  assert ablation["data.sampler"] == "uniform" and base.get("data.debias", True)


def test_faces_seen_from_behind_are_not_usable():
  yaws = np.array([0.0, 45.0, -90.0, 91.0, 180.0, -135.0, 10.0, 20.0])
  views = np.array([VIEWS.index(v) for v in
                    ("front", "left", "right", "side", "back", "back", "back", "front")])
  visibility = np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.1])
  np.testing.assert_array_equal(vs.usable_faces(yaws), [1, 1, 1, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(vs.usable_faces(yaws, views), [1, 1, 1, 0, 0, 0, 0, 1])
  np.testing.assert_array_equal(vs.usable_faces(yaws, views, visibility), [1, 1, 1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(vs.usable_faces(yaws, max_yaw=30.0), [1, 0, 0, 0, 0, 0, 1, 1])


def test_circular_distance_wraps():
  assert vs.circular_distance(170, -170) == pytest.approx(20.0)
  assert vs.circular_distance(0, 180) == pytest.approx(180.0)
  assert vs.circular_distance(-90, 270) == pytest.approx(0.0)


def test_decay_zero_excludes_neighbours_within_delta_across_the_wrap():
  # 170 and -170 are 20 degrees apart (< delta 25): with decay 0 they never come together.
  pool = np.array([170.0, -170.0, 90.0])
  for seed in range(200):
    picks = set(vs.sample_views(pool, 2, np.random.default_rng(seed), decay=0.0,
                                debias=False).tolist())
    assert picks != {0, 1}


def test_delta_is_a_strict_bound():
  # Exactly delta apart is not "within delta": both may be chosen even with decay 0.
  pool = np.array([0.0, 25.0])
  pairs = {tuple(sorted(vs.sample_views(pool, 2, np.random.default_rng(s), decay=0.0).tolist()))
           for s in range(20)}
  assert pairs == {(0, 1)}
  # Just inside delta the second pick falls back to the start weights (k is honoured).
  np.testing.assert_array_equal(
      np.sort(vs.sample_views(np.array([0.0, 24.9]), 2, np.random.default_rng(0), decay=0.0)),
      [0, 1])


def test_decay_factor_sets_the_neighbour_probability():
  # Pool: A at 0, B at 10 (within delta of A), C at 100. Equal start weights (debias off).
  # After picking A, P(B next) = decay / (decay + 1).
  pool = np.array([0.0, 10.0, 100.0])
  for decay in (0.25, 1.0):
    rng = np.random.default_rng(3)
    seconds = []
    while len(seconds) < 4000:
      picks = vs.sample_views(pool, 2, rng, decay=decay, debias=False)
      if picks[0] == 0:
        seconds.append(picks[1])
    p_b = np.mean(np.asarray(seconds) == 1)
    assert p_b == pytest.approx(decay / (decay + 1.0), abs=0.03), (decay, p_b)


def test_larger_delta_spreads_more():
  pool = frontal_heavy_pool(np.random.default_rng(4))
  rng = np.random.default_rng(5)
  def spread(delta):
    return np.mean([vs.mean_pairwise_distance(pool[vs.sample_views(
        pool, 4, rng, delta=delta, decay=0.0, debias=False)]) for _ in range(300)])
  assert spread(60.0) > spread(1.0) + 20.0


def test_debias_weights_counter_the_frontal_bias():
  pool = frontal_heavy_pool(np.random.default_rng(6))
  w = vs.debias_weights(pool)
  frontal, back = w[:40].sum(), w[np.abs(pool) > 140].sum()
  # Before de-biasing the 40 frontal crops carry 40x the weight of one back crop group member;
  # after, all frontal crops together weigh about as much as the back-view cluster.
  assert frontal / back < 2.0


def test_edge_cases_and_errors():
  rng = np.random.default_rng(0)
  assert vs.sample_views([], 3, rng).shape == (0,)
  assert sorted(vs.sample_views([10.0, 20.0], 5, rng).tolist()) == [0, 1]  # k capped by pool
  with pytest.raises(ValueError, match="mode"):
    vs.sample_views([0.0], 1, rng, mode="greedy")
  with pytest.raises(ValueError, match="decay"):
    vs.sample_views([0.0], 1, rng, decay=1.5)
