"""Actor-Bench metrics on hand-made cases: the same clip scores perfectly, another actor's clip
does not; bootstrap intervals; the Fréchet distance against a direct formula; attribute reading
on clean renders."""
import dataclasses

import numpy as np
import pytest
from PIL import Image

from data import render_actor as ra
from wildactor_jax.eval import attributes, bootstrap, fidelity, metrics


def unit_rows(rng, n, d=8):
  return metrics.unit(rng.standard_normal((n, d)))


def test_view_bins_and_closest_view_pairing():
  assert list(metrics.view_bin([0, 45, -46, 135, 136, 180, -170])) == [
      "front", "front", "side", "side", "back", "back", "back"]
  refs = np.eye(3)                      # one reference per view: 0, 90, 180 degrees
  frames = np.eye(3)[[0, 1, 2, 2]]      # each frame looks exactly like its view's reference
  sim = metrics.view_aware_similarity(frames, [10.0, 95.0, 170.0, -175.0], refs, [0, 90, 180])
  assert sim["mean"] == pytest.approx(1.0)
  assert sim["front"] == sim["side"] == sim["back"] == pytest.approx(1.0)
  # The same frames at the wrong views score 0: each is paired with an orthogonal reference.
  wrong = metrics.view_aware_similarity(frames, [90.0, 180.0, 0.0, 0.0], refs, [0, 90, 180])
  assert wrong["mean"] == pytest.approx(0.0)
  only_front = metrics.view_aware_similarity(frames[:1], [0.0], refs, [0, 90, 180])
  assert only_front["side"] is None and only_front["back"] is None
  with pytest.raises(ValueError):
    metrics.view_aware_similarity(frames, [0.0, 90.0], refs, [0, 90, 180])


def test_retrieval_same_clip_perfect_other_actor_not():
  rng = np.random.default_rng(0)
  gallery = {a: unit_rows(rng, 4) for a in ("a", "b", "c")}
  own = {a: g + 0.05 * rng.standard_normal(g.shape) for a, g in gallery.items()}
  clips = [own["a"], own["b"], own["c"]]
  assert metrics.retrieval_top1(clips, ["a", "b", "c"], gallery).all()
  # Swapped: b's clip shown for prompt a must retrieve b, not a.
  assert not metrics.retrieval_top1([own["b"]], ["a"], gallery).any()
  assert metrics.retrieve(own["b"], gallery) == "b"
  with pytest.raises(ValueError, match="no gallery"):
    metrics.retrieval_top1([own["a"]], ["z"], gallery)


def test_retrieve_each_reads_every_frame_alone():
  """A clip that starts as actor a and turns into b: pooled, it retrieves one actor; frame by
  frame, each frame retrieves its own, and a single frame retrieves as `retrieve` would."""
  rng = np.random.default_rng(1)
  centres = {a: unit_rows(rng, 1)[0] for a in ("a", "b", "c")}
  gallery = {a: c + 0.2 * unit_rows(rng, 4) for a, c in centres.items()}
  frames = np.stack([centres["a"]] * 3 + [centres["b"]] * 2) + 0.1 * unit_rows(rng, 5)
  assert metrics.retrieve_each(frames, gallery) == ["a", "a", "a", "b", "b"]
  for f in frames:
    assert metrics.retrieve_each(f[None], gallery) == [metrics.retrieve(f[None], gallery)]


def test_temporal_consistency():
  rng = np.random.default_rng(1)
  still = np.repeat(unit_rows(rng, 1), 5, axis=0)
  assert metrics.temporal_consistency(still) == pytest.approx(1.0)
  assert metrics.temporal_consistency(np.eye(4)) == pytest.approx(0.0)
  assert metrics.temporal_consistency(still[:1]) == 1.0


def test_bootstrap_over_identities():
  values = np.array([1, 1, 1, 0, 0, 0], float)
  groups = np.array(["a", "a", "a", "b", "b", "b"])
  r = bootstrap.mean_ci(values, groups, n_boot=500, seed=0)
  assert r["mean"] == 0.5 and r["groups"] == 2
  assert r["ci95"][0] == 0.0 and r["ci95"][1] == 1.0  # resampling 2 identities: 0, 0.5 or 1
  same = bootstrap.mean_ci(np.ones(6), groups)
  assert same["ci95"] == [1.0, 1.0]
  assert bootstrap.mean_ci(values, groups, seed=3) == bootstrap.mean_ci(values, groups, seed=3)
  assert bootstrap.mean_ci([np.nan, 1.0], ["a", "b"])["n"] == 1
  many = bootstrap.mean_ci(np.r_[np.ones(50), np.zeros(50)], np.arange(100) % 20, seed=0)
  assert many["ci95"][0] < 0.5 < many["ci95"][1]


def test_frechet_distance():
  rng = np.random.default_rng(2)
  a = rng.standard_normal((400, 4))
  assert fidelity.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
  # Diagonal Gaussians: d = |dmu|^2 + sum (sa - sb)^2 in closed form.
  b = a * 2.0 + 3.0
  ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  import scipy.linalg as scipy_linalg  # a dependency of jax itself
  cross = np.real(np.trace(scipy_linalg.sqrtm(ca @ cb)))
  want = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb) - 2 * cross
  assert fidelity.frechet_distance(a, b) == pytest.approx(want, rel=1e-6)
  # Rank-deficient covariances (fewer samples than dims) stay finite and non-negative.
  assert fidelity.frechet_distance(rng.standard_normal((5, 16)), rng.standard_normal((6, 16))) > 0
  d, half = fidelity.real_split_distance(a, np.arange(400) // 10)
  assert d >= 0 and 150 <= half.sum() <= 250
  with pytest.raises(ValueError):
    fidelity.frechet_distance(a[:1], b)


PLAIN = ra.Identity(skin="tan", hair_colour="red", hair_style="short", shirt_colour="green",
                    shirt_pattern="plain", pattern_colour="white", long_sleeves=True,
                    trouser_colour="navy", shorts=False, shoe_colour="black", height=1.0,
                    shoulder_width=0.25, head_size=0.075, leg_ratio=0.48, limb_width=0.055)


def render(identity, yaw=0.0, side=96):
  img = Image.new("RGB", (side, side), (200, 220, 240))
  ra.draw_figure(img, identity, ra.Pose(), ra.View(yaw, side / 2, side * 0.95, side * 0.85))
  return np.asarray(img)


# What the raw folder's palettes.json holds (data/synthetic_actors.py writes it).
PALETTES = {"shirt": ra.CLOTH_COLOURS, "trousers": ra.CLOTH_COLOURS, "hair": ra.HAIR_COLOURS,
            "skin": ra.SKIN_TONES}


@pytest.mark.parametrize("tolerance", [24.0, 23.5, 10.0, 0.0])
def test_foreground_is_the_distance_to_the_border_colours(tolerance):
  """The prefix-sum count in `attributes.foreground` against its definition: a pixel is figure
  when its Chebyshev distance to every border colour (rounded to a multiple of 4) exceeds the
  tolerance. Noise frames give many border colours; smooth ones put pixels near the edges."""
  rng = np.random.default_rng(0)
  for i in range(40):
    frame = rng.integers(0, 256, (12, 12, 3)).astype(np.uint8)
    if i % 2:  # a smooth background around a figure
      frame = (rng.integers(0, 256, 3) + rng.integers(-30, 31, (12, 12, 3))).clip(0, 255)
      frame = frame.astype(np.uint8)
    f = frame.astype(np.float32)
    border = np.concatenate([f[0], f[-1], f[:, 0], f[:, -1]])
    border = np.unique(np.round(border / 4) * 4, axis=0)
    brute = np.abs(f[:, :, None, :] - border[None, None]).max(-1).min(-1) > tolerance
    np.testing.assert_array_equal(attributes.foreground(frame, tolerance), brute)


def test_attributes_same_actor_perfect_other_actor_not():
  truth = attributes.true_attributes(dataclasses.asdict(PLAIN))  # an actors.jsonl row
  read = lambda clip: attributes.read_clip(clip, PALETTES)
  clip = np.stack([render(PLAIN, yaw) for yaw in (0, 20, -20)])
  acc = attributes.accuracy(read(clip), truth)
  assert acc == {"shirt": 1.0, "trousers": 1.0, "hair": 1.0, "skin": 1.0}
  other = ra.Identity(**{**PLAIN.__dict__, "skin": "pale", "hair_colour": "black",
                         "shirt_colour": "yellow", "trouser_colour": "khaki"})
  other_clip = np.stack([render(other, yaw) for yaw in (0, 20, -20)])
  acc = attributes.accuracy(read(other_clip), truth)
  assert acc == {"shirt": 0.0, "trousers": 0.0, "hair": 0.0, "skin": 0.0}
  bald = attributes.true_attributes(dataclasses.asdict(
      ra.Identity(**{**PLAIN.__dict__, "hair_style": "bald"})))
  assert np.isnan(attributes.accuracy(read(clip), bald)["hair"])
  assert attributes.read_frame(np.full((32, 32, 3), 90, np.uint8), PALETTES) == dict.fromkeys(
      attributes.ATTRIBUTES)
