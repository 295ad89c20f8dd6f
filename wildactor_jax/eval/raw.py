"""The raw synthetic-actor dataset folder as the evaluation reads it.

A folder written by data/synthetic_actors.py (the public Actor-18M schema):
  manifest.jsonl      one row per clip: video, prompt, actor_id, refs[] (path, region, angle, ...)
  annotations.jsonl   per clip: `video` and the true `yaw` of every frame
  clips/*.mp4, refs/<actor>/{face,body}_y<yaw>.png   the actor's clean view renders

An actor's gallery is its own view renders (refs under refs/<actor>/, regions face and body),
never crops of its clips. Held-out actors come from the dataset builder's split rule
(data.actor18m.validate.held_out_actors), so evaluation and training agree on who is unseen.
"""
from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
from PIL import Image

from wildactor_jax import fs


class RawDataError(ValueError):
  """A one-line problem with the raw dataset folder (names the file and field)."""


@dataclasses.dataclass(frozen=True)
class Clip:
  video: str                       # full path
  actor: str
  prompt: str
  yaws: tuple[float, ...] | None   # per frame, from annotations.jsonl


@dataclasses.dataclass(frozen=True)
class Reference:
  path: str    # full path
  actor: str
  region: str  # face | body
  yaw: float


@dataclasses.dataclass
class RawDataset:
  root: str
  clips: list[Clip]
  refs: dict[str, list[Reference]]  # actor -> its view renders, sorted by path

  @property
  def actors(self) -> list[str]:
    return sorted({c.actor for c in self.clips})

  def clips_of(self, actor: str) -> list[Clip]:
    return [c for c in self.clips if c.actor == actor]

  def gallery(self, actor: str, region: str = "body") -> list[Reference]:
    return [r for r in self.refs.get(actor, []) if r.region == region]


def _jsonl(path: str) -> list[dict]:
  rows = []
  for n, line in enumerate(fs.read_text(path).splitlines(), 1):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      raise RawDataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
  return rows


def load(root: str) -> RawDataset:
  """Reads manifest.jsonl (+ annotations.jsonl when present); one-line errors on bad rows."""
  manifest = fs.join(root, "manifest.jsonl")
  if not fs.exists(manifest):
    raise RawDataError(f"{manifest}: missing (expected a folder written by "
                       "data/synthetic_actors.py)")
  notes = fs.join(root, "annotations.jsonl")
  yaws = {r.get("video"): r.get("yaw") for r in _jsonl(notes)} if fs.exists(notes) else {}
  clips, refs = [], {}
  for n, row in enumerate(_jsonl(manifest), 1):
    for field in ("video", "actor_id", "prompt", "refs"):
      if field not in row:
        raise RawDataError(f"{manifest}:{n}: missing field {field!r}")
    actor = str(row["actor_id"])
    y = yaws.get(row["video"])
    clips.append(Clip(fs.join(root, row["video"]), actor, str(row["prompt"]),
                      None if y is None else tuple(float(v) for v in y)))
    own = refs.setdefault(actor, {})
    for ref in row["refs"]:
      path = str(ref.get("path", ""))
      if ref.get("region") in ("face", "body") and path.startswith(f"refs/{actor}/"):
        own[path] = Reference(fs.join(root, path), actor, ref["region"], float(ref["angle"]))
  if not clips:
    raise RawDataError(f"{manifest}: no rows")
  return RawDataset(str(root), clips,
                    {a: [r[k] for k in sorted(r)] for a, r in refs.items()})


def held_out(actors, test_fraction: float) -> list[str]:
  """The test identities under the dataset builder's own rule, sorted."""
  from data.actor18m.validate import held_out_actors
  return sorted(held_out_actors(actors, test_fraction))


def read_image(path: str) -> np.ndarray:
  """(H, W, 3) uint8."""
  try:
    return np.asarray(Image.open(io.BytesIO(fs.read_bytes(path))).convert("RGB"))
  except FileNotFoundError:
    raise RawDataError(f"{path}: no such image") from None


def read_video(path: str) -> np.ndarray:
  """(T, H, W, 3) uint8 (ffmpeg reads local files; a bucket is read through its mount)."""
  from wildactor_jax import media
  local = fs.local_path(path, "video")
  if not fs.exists(local):
    raise RawDataError(f"{path}: no such video")
  return media.read_mp4(local)


def frame_yaws(yaws, frames: int) -> np.ndarray | None:
  """A clip's per-frame yaws resampled to `frames` frames (a generated clip may be shorter or
  longer than the clip whose prompt it took): nearest frame in normalised time."""
  if yaws is None or len(yaws) == 0:
    return None
  y = np.asarray(yaws, np.float64)
  idx = np.round(np.linspace(0, len(y) - 1, frames)).astype(int)
  return y[idx]


def identity_images(ds: RawDataset, actors, region: str = "body") -> tuple[np.ndarray, np.ndarray]:
  """Every frame of the actors' clips and their `region` view renders, resized to the clips'
  frame size -> (uint8 (N, H, W, 3), labels (N,) = index into sorted(actors))."""
  actors = sorted(actors)
  images, labels = [], []
  for label, actor in enumerate(actors):
    frames = [read_video(c.video) for c in ds.clips_of(actor)]
    size = frames[0].shape[1:3] if frames else None
    for video in frames:
      images.extend(video)
    for ref in ds.gallery(actor, region):
      im = read_image(ref.path)
      if size is not None and im.shape[:2] != size:
        im = np.asarray(Image.fromarray(im).resize(size[::-1], Image.BILINEAR))
      images.append(im)
    labels.extend([label] * (len(images) - len(labels)))
  if not images:
    raise RawDataError(f"{ds.root}: no clips or references for the actors {actors[:4]}...")
  return np.stack(images), np.asarray(labels, np.int32)
