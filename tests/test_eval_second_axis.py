"""The benchmark's second axis on hand-made cases whose answers are known: a pasted reference
scores copy-paste +1, the ground-truth clip -1; a frozen clip has dynamic degree 0; yaw accuracy
and pose-locking; the paired bootstrap of ablations."""
import numpy as np
import pytest

from wildactor_jax.eval import adherence, bootstrap


def clip(rng, frames=9, size=32):
  """A moving square on a two-tone background (uint8 frames)."""
  out = np.zeros((frames, size, size, 3), np.uint8)
  out[:, : size // 2] = (190, 190, 200)
  out[:, size // 2:] = (140, 140, 146)
  colour = rng.integers(0, 255, 3)
  for t in range(frames):
    x = 4 + 2 * t
    out[t, 8:24, x:x + 8] = colour
  return out


def test_copy_paste_plus_one_for_a_pasted_reference_minus_one_for_the_truth():
  rng = np.random.default_rng(0)
  truth = clip(rng)
  refs = np.stack([np.full((32, 32, 3), 235, np.uint8), clip(rng, 1)[0][::-1]])  # unlike it
  mean = adherence.mean_layout(np.concatenate([clip(rng) for _ in range(6)]))
  lay = lambda f: adherence.layout_embedding(f, mean)
  pasted = np.repeat(refs[:1], len(truth), axis=0)
  assert adherence.copy_paste(lay(truth), lay(truth), lay(refs)) == pytest.approx(-1.0)
  # Pasting reference 0 is +1 against it, and still +1 when another reference is given too:
  # each frame is scored against the reference it is nearest to.
  assert adherence.copy_paste(lay(pasted), lay(truth), lay(refs[:1])) == pytest.approx(1.0)
  assert adherence.copy_paste(lay(pasted), lay(truth), lay(refs)) == pytest.approx(1.0)
  other = np.repeat(refs[1:], len(truth), axis=0)
  assert adherence.copy_paste(lay(other), lay(truth), lay(refs)) == pytest.approx(1.0)
  # Blending the truth toward the pasted reference moves the score monotonically from -1 to +1.
  blends = [((1 - w) * truth.astype(float) + w * pasted.astype(float)).astype(np.uint8)
            for w in (0.25, 0.5, 0.75)]
  scores = [adherence.copy_paste(lay(b), lay(truth), lay(refs[:1])) for b in blends]
  assert -1.0 < scores[0] < scores[1] < scores[2] < 1.0
  with pytest.raises(ValueError):
    adherence.copy_paste(lay(truth), lay(truth[:3]), lay(refs))


def test_dynamic_degree_zero_for_a_frozen_clip_one_for_the_real_one():
  rng = np.random.default_rng(1)
  real = clip(rng)
  frozen = np.repeat(real[:1], len(real), axis=0)
  assert adherence.dynamic_degree(real, real) == pytest.approx(1.0)
  assert adherence.dynamic_degree(frozen, real) == 0.0
  faster = real[::2]  # the same motion in half the frames: twice the change per frame
  assert adherence.dynamic_degree(faster, real) == pytest.approx(2.0, rel=0.05)
  assert np.isnan(adherence.dynamic_degree(real, frozen))


def test_yaw_accuracy_and_pose_locking():
  intended = np.linspace(0.0, 180.0, 9)
  assert adherence.yaw_accuracy(intended, intended) == 1.0
  assert adherence.yaw_accuracy(intended + 180.0, intended) == 0.0
  assert adherence.yaw_accuracy([170.0, -170.0], [-175.0, 175.0]) == 1.0  # wraps around
  # Locked to the frontal reference: every frame at yaw 0 while the clip should turn to 180.
  locked = np.zeros(9)
  lock = adherence.pose_locking(locked, intended, [0.0])
  follow = adherence.pose_locking(intended, intended, [0.0])
  assert lock["to_reference"] == 0.0 and follow["to_reference"] == pytest.approx(90.0)
  assert lock["yaw_error"] == pytest.approx(90.0) and follow["yaw_error"] == 0.0
  assert lock["intended_to_reference"] == follow["intended_to_reference"] == pytest.approx(90.0)
  assert adherence.prompt_adherence(True, False, 0.5) == pytest.approx(0.5)
  assert 0.25 < adherence.CHANCE["prompt_adherence"] < 0.3


def test_paired_difference_sees_a_consistent_gain_that_unpaired_intervals_hide():
  rng = np.random.default_rng(2)
  actors = np.repeat(np.arange(20), 2)
  base = rng.uniform(0.0, 1.0, 20)[actors]        # actors differ a lot
  a, b = base, base + 0.05                         # B is better by 0.05 on every clip
  d = bootstrap.paired_difference(a, b, actors, seed=0)
  assert d["mean"] == pytest.approx(0.05) and d["ci95"][0] > 0.0
  assert d["a"] == pytest.approx(a.mean()) and d["b"] == pytest.approx(b.mean())
  ia, ib = bootstrap.mean_ci(a, actors), bootstrap.mean_ci(b, actors)
  assert ib["ci95"][0] < ia["ci95"][1]             # the two arms' own intervals overlap
  same = bootstrap.paired_difference(a, a, actors)
  assert same["mean"] == 0.0 and same["ci95"] == [0.0, 0.0]
  with_nan = bootstrap.paired_difference(np.r_[a[:-1], np.nan], b, actors)
  assert with_nan["n"] == len(a) - 1
