"""The benchmark's second axis as pure functions (numpy in, numbers out): does the clip do what
the prompt says, and is it a copy of the references?

- prompt adherence: the probes' motion and camera read against the prompt's, and the per-frame
  yaw read against the clip's intended yaw (correct within YAW_TOLERANCE degrees); the mean of
  the three. Chance is CHANCE (motion 1/4, camera 1/3, yaw 90/360).
- copy-paste (after WithAnyone's geodesic score): with theta(a, b) = arccos(cos(e_a, e_b)),
  CP = (theta(gen, truth) - theta(gen, ref)) / theta(truth, ref), per frame against the given
  reference it is nearest to, averaged over frames: +1 is a copy of a reference, -1 the
  ground-truth frame. The embedding is the frame's LAYOUT (`layout_embedding`: colours pooled on a coarse grid, centred on the real frames'
  mean), not identity: an identity embedding is by design blind to what a copy copies (pose,
  view, place, scale) and would call every frame of the right actor a copy.
- pose-locking: the mean yaw error of the frames against the intended yaw, and the distance of
  the frames' yaw to the nearest given reference's yaw next to the intended yaw's own distance
  to it (a clip locked to a reference's view sits much nearer the reference than intended).
- dynamic degree: the clip's frame-to-frame motion energy over the real clip's (the source clip
  whose prompt it follows): a frozen clip scores 0, a clip as lively as the real one 1.
"""
from __future__ import annotations

import numpy as np

from wildactor_jax.eval.metrics import angular_distance, unit

YAW_TOLERANCE = 45.0
LAYOUT_GRID = 8
CHANCE = {"motion": 1 / 4, "camera": 1 / 3, "yaw": 2 * YAW_TOLERANCE / 360.0}
CHANCE["prompt_adherence"] = float(np.mean(list(CHANCE.values())))


def yaw_accuracy(estimated, intended, tolerance: float = YAW_TOLERANCE) -> float:
  """Fraction of frames whose estimated yaw is within `tolerance` degrees of the intended."""
  estimated, intended = np.asarray(estimated, np.float64), np.asarray(intended, np.float64)
  if estimated.shape != intended.shape or estimated.size == 0:
    raise ValueError(f"yaws {estimated.shape} and {intended.shape}: expected equal, non-empty")
  return float(np.mean(angular_distance(estimated, intended) <= tolerance))


def prompt_adherence(motion_ok: bool, camera_ok: bool, yaw_acc: float) -> float:
  return float(np.mean([float(motion_ok), float(camera_ok), float(yaw_acc)]))


def pose_locking(estimated, intended, reference_yaws) -> dict:
  """{"yaw_error": mean |est - intended|, "to_reference": mean distance of est to the nearest
  given reference yaw, "intended_to_reference": the same for the intended yaws} in degrees."""
  est, want = np.asarray(estimated, np.float64), np.asarray(intended, np.float64)
  refs = np.asarray(reference_yaws, np.float64).reshape(-1)
  out = {"yaw_error": float(angular_distance(est, want).mean())}
  if refs.size:
    nearest = lambda y: angular_distance(y[:, None], refs[None, :]).min(axis=1).mean()
    out.update(to_reference=float(nearest(est)), intended_to_reference=float(nearest(want)))
  return out


def _downsample(frames: np.ndarray, grid: int) -> np.ndarray:
  """(N, H, W, 3) uint8 or float -> (N, grid, grid, 3) float64 block means in [0, 1]."""
  f = np.asarray(frames, np.float64)
  if f.max() > 1.5:
    f = f / 255.0
  n, h, w, c = f.shape
  if h % grid or w % grid:
    raise ValueError(f"frames {h}x{w}: expected sides divisible by {grid}")
  return f.reshape(n, grid, h // grid, grid, w // grid, c).mean(axis=(2, 4))


def layout_embedding(frames: np.ndarray, mean_frame: np.ndarray,
                     grid: int = LAYOUT_GRID) -> np.ndarray:
  """(N, H, W, 3) frames -> (N, grid * grid * 3): block-mean colours minus the real frames' mean
  at the same grid (`mean_layout`), so the angle between two frames reads where things are."""
  return (_downsample(frames, grid) - mean_frame[None]).reshape(len(frames), -1)


def mean_layout(frames: np.ndarray, grid: int = LAYOUT_GRID) -> np.ndarray:
  """The mean (grid, grid, 3) layout of a set of real frames (N, H, W, 3)."""
  return _downsample(frames, grid).mean(axis=0)


def _theta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return np.arccos(np.clip(np.sum(unit(a) * unit(b), axis=-1), -1.0, 1.0))


def copy_paste(generated: np.ndarray, truth: np.ndarray, references: np.ndarray) -> float:
  """generated, truth (T, D) embeddings of paired frames, references (R, D) -> the mean CP over
  frames, each frame scored against the reference it is nearest to: pasting any one of several
  references is a copy (+1), the real frame is -1. NaN where that reference equals the truth
  frame (no scale)."""
  generated, truth = np.asarray(generated, np.float64), np.asarray(truth, np.float64)
  refs = np.asarray(references, np.float64)
  if generated.shape != truth.shape or refs.ndim != 2 or not len(refs):
    raise ValueError(f"generated {generated.shape}, truth {truth.shape}, references {refs.shape}:"
                     " expected equal (T, D) pairs and at least one (D,) reference")
  g, t, r = generated[:, None], truth[:, None], refs[None]
  to_ref = _theta(g, r)                                   # (T, R)
  nearest = np.argmin(to_ref, axis=1)[:, None]
  pick = lambda a: np.take_along_axis(a, nearest, axis=1)[:, 0]
  scale = pick(_theta(t, r))
  with np.errstate(invalid="ignore", divide="ignore"):
    cp = (_theta(generated, truth) - pick(to_ref)) / np.where(scale > 1e-6, scale, np.nan)
  return float(np.nanmean(cp)) if np.any(np.isfinite(cp)) else float("nan")


def motion_energy(frames: np.ndarray, grid: int = 32) -> float:
  """Mean absolute change between consecutive frames, on a grid x grid downsample in [0, 1]."""
  f = _downsample(frames, min(grid, frames.shape[1]))
  if len(f) < 2:
    return 0.0
  return float(np.abs(np.diff(f, axis=0)).mean())


def dynamic_degree(generated: np.ndarray, real: np.ndarray) -> float:
  """Motion energy of the generated clip over the real clip's (NaN if the real one is still)."""
  base = motion_energy(real)
  return motion_energy(generated) / base if base > 0 else float("nan")
