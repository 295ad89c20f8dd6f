"""Actor-Bench metrics as pure functions of embeddings (numpy in, numbers out).

Embeddings are unit vectors from `embedder`; cosine similarity is their dot product. Yaws are
the manifest's convention (degrees, 0 = facing the camera, 180 = back to it).

- view-aware identity similarity (the WildActor paper's protocol): each frame is compared with
  the reference rendered at the closest view, reported per view bin;
- identity retrieval: the clip's mean embedding against each candidate actor's reference
  prototype (mean of its reference embeddings), top-1;
- temporal consistency: cosine similarity of consecutive frames.
"""
from __future__ import annotations

import numpy as np

VIEW_BINS = ("front", "side", "back")


def unit(x: np.ndarray, axis: int = -1) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def angular_distance(a, b) -> np.ndarray:
  """|a - b| in degrees on the circle, in [0, 180]."""
  d = np.abs((np.asarray(a, np.float64) - np.asarray(b, np.float64)) % 360.0)
  return np.minimum(d, 360.0 - d)


def view_bin(yaw) -> np.ndarray:
  """'front' for |yaw| <= 45, 'side' for 45 < |yaw| <= 135, 'back' beyond."""
  a = angular_distance(yaw, 0.0)
  return np.where(a <= 45.0, "front", np.where(a <= 135.0, "side", "back"))


def view_aware_similarity(frames: np.ndarray, frame_yaws, refs: np.ndarray, ref_yaws) -> dict:
  """frames (T, D) and refs (R, D) unit embeddings; each frame is paired with the reference
  whose yaw is closest to the frame's. -> {"per_frame": (T,), "mean": float,
  "front"/"side"/"back": mean over the frames in that bin, or None when the bin is empty}."""
  frame_yaws, ref_yaws = np.asarray(frame_yaws, np.float64), np.asarray(ref_yaws, np.float64)
  if len(frames) != len(frame_yaws) or len(refs) != len(ref_yaws) or not len(refs):
    raise ValueError(f"{len(frames)} frames / {len(frame_yaws)} yaws, {len(refs)} refs / "
                     f"{len(ref_yaws)} yaws: expected equal counts and at least one reference")
  closest = np.argmin(angular_distance(frame_yaws[:, None], ref_yaws[None, :]), axis=1)
  per_frame = np.sum(unit(frames) * unit(refs)[closest], axis=-1)
  bins = view_bin(frame_yaws)
  out = {"per_frame": per_frame, "mean": float(per_frame.mean())}
  for b in VIEW_BINS:
    out[b] = float(per_frame[bins == b].mean()) if np.any(bins == b) else None
  return out


def prototype(embeddings: np.ndarray) -> np.ndarray:
  """The unit mean of a set of embeddings (a clip's frames or an actor's references)."""
  return unit(np.mean(unit(embeddings), axis=0))


def retrieve_each(frames: np.ndarray, gallery: dict[str, np.ndarray]) -> list[str]:
  """Per frame (T, D), the gallery actor that frame alone is most similar to: the largest cosine
  to the actor's reference prototype (ties: first by name)."""
  names = sorted(gallery)
  protos = np.stack([prototype(gallery[a]) for a in names])
  return [names[i] for i in np.argmax(unit(frames) @ protos.T, axis=1)]


def retrieve(clip: np.ndarray, gallery: dict[str, np.ndarray]) -> str:
  """The gallery actor the clip's frames (T, D) are most similar to, pooled: the clip's
  prototype retrieved as one frame (ties: first by name)."""
  return retrieve_each(prototype(clip)[None], gallery)[0]


def retrieval_top1(clips: list[np.ndarray], targets: list[str],
                   gallery: dict[str, np.ndarray]) -> np.ndarray:
  """Per clip, whether it retrieves its target actor (bool (N,)). The target is whoever the clip
  should look like: the reference actor for clips generated with (or with swapped) references,
  the prompt's actor otherwise."""
  if len(clips) != len(targets):
    raise ValueError(f"{len(clips)} clips but {len(targets)} targets")
  missing = sorted(set(targets) - set(gallery))
  if missing:
    raise ValueError(f"targets {missing[:3]} have no gallery entry")
  return np.array([retrieve(c, gallery) == t for c, t in zip(clips, targets)], bool)


def temporal_consistency(frames: np.ndarray) -> float:
  """Mean cosine similarity of consecutive frame embeddings (1.0 for a single frame)."""
  f = unit(frames)
  if len(f) < 2:
    return 1.0
  return float(np.mean(np.sum(f[1:] * f[:-1], axis=-1)))
