"""The raw synthetic-actor dataset folder as the evaluation reads it.

A folder written by data/synthetic_actors.py (the public Actor-18M schema):
  manifest.jsonl      one row per clip: video, prompt, actor_id, refs[] (path, region, angle, ...)
  annotations.jsonl   per clip: `video`, its motion, camera move and the true `yaw` of every frame
  gallery.jsonl       per actor: evaluation-only body renders (never a reference)
  actors.jsonl, palettes.json   the actors' true colours (attribute scoring)
  clips/*.mp4, refs/<actor>/*.png, gallery/<actor>/*.png

Two sets of images per actor, never the same: its REFERENCES (`references`: the clean view
renders in the neutral pose under refs/<actor>/, what the benchmark conditions on) and its
GALLERY (`gallery`: renders in other poses, views, scales and places, what identity is scored
against), so a generator that pastes a reference never meets that image in the gallery.
Held-out actors come from the dataset builder's split rule
(wildactor_jax.input.splits.held_out_actors), so evaluation and training agree on who is unseen.
"""
from __future__ import annotations

import dataclasses
import io

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
  motion: str | None = None        # what the prompt asks (annotations.jsonl)
  camera: str | None = None


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
  refs: dict[str, list[Reference]]     # actor -> its neutral-pose view renders, sorted by path
  galleries: dict[str, list[Reference]] = dataclasses.field(default_factory=dict)
  identities: dict[str, dict] = dataclasses.field(default_factory=dict)  # actors.jsonl rows
  palettes: dict[str, dict] = dataclasses.field(default_factory=dict)    # palettes.json

  @property
  def actors(self) -> list[str]:
    return sorted({c.actor for c in self.clips})

  def clips_of(self, actor: str) -> list[Clip]:
    return [c for c in self.clips if c.actor == actor]

  def references(self, actor: str, region: str = "body") -> list[Reference]:
    """The actor's neutral-pose view renders of `region`: what the benchmark conditions on."""
    return [r for r in self.refs.get(actor, []) if r.region == region]

  def gallery(self, actor: str) -> list[Reference]:
    """The actor's evaluation-only renders: what identity is scored against."""
    if actor not in self.galleries:
      raise RawDataError(f"{fs.join(self.root, GALLERY)}: no gallery renders for actor {actor} "
                         "(re-render the folder with data/synthetic_actors.py)")
    return self.galleries[actor]


def _jsonl(path: str) -> list[dict]:
  return [row for _, row in fs.read_json_lines(path, RawDataError)]


GALLERY = "gallery.jsonl"


def _neutral(ref: dict) -> bool:
  """A clean view render in the neutral pose (folders rendered before metadata.pose existed:
  every view render under refs/<actor>/ counts)."""
  return (ref.get("metadata") or {}).get("pose", "neutral") == "neutral"


def load(root: str) -> RawDataset:
  """Reads manifest.jsonl (+ annotations.jsonl, gallery.jsonl, actors.jsonl, palettes.json when
  present); one-line errors on bad rows."""
  manifest = fs.join(root, "manifest.jsonl")
  if not fs.exists(manifest):
    raise RawDataError(f"{manifest}: missing (expected a folder written by "
                       "data/synthetic_actors.py)")
  notes_path = fs.join(root, "annotations.jsonl")
  notes = {r.get("video"): r for r in _jsonl(notes_path)} if fs.exists(notes_path) else {}
  clips, refs = [], {}
  for n, row in enumerate(_jsonl(manifest), 1):
    for field in ("video", "actor_id", "prompt", "refs"):
      if field not in row:
        raise RawDataError(f"{manifest}:{n}: missing field {field!r}")
    actor = str(row["actor_id"])
    note = notes.get(row["video"], {})
    y = note.get("yaw")
    clips.append(Clip(fs.join(root, row["video"]), actor, str(row["prompt"]),
                      None if y is None else tuple(float(v) for v in y),
                      note.get("motion"), note.get("camera")))
    own = refs.setdefault(actor, {})
    for ref in row["refs"]:
      path = str(ref.get("path", ""))
      if (ref.get("region") in ("face", "body") and path.startswith(f"refs/{actor}/")
          and _neutral(ref)):
        own[path] = Reference(fs.join(root, path), actor, ref["region"], float(ref["angle"]))
  if not clips:
    raise RawDataError(f"{manifest}: no rows")
  galleries = {}
  gallery_path = fs.join(root, GALLERY)
  if fs.exists(gallery_path):
    for n, row in enumerate(_jsonl(gallery_path), 1):
      try:
        galleries.setdefault(str(row["actor_id"]), []).append(
            Reference(fs.join(root, row["path"]), str(row["actor_id"]), str(row["region"]),
                      float(row["angle"])))
      except (KeyError, TypeError, ValueError):
        raise RawDataError(f"{gallery_path}:{n}: expected actor_id, path, region and angle") from None
  actors_path, palettes_path = fs.join(root, "actors.jsonl"), fs.join(root, "palettes.json")
  identities = ({str(r["actor_id"]): r for r in _jsonl(actors_path)}
                if fs.exists(actors_path) else {})
  palettes = fs.read_json(palettes_path) if fs.exists(palettes_path) else {}
  return RawDataset(str(root), clips, {a: [r[k] for k in sorted(r)] for a, r in refs.items()},
                    galleries, identities, palettes)


def held_out(actors, test_fraction: float) -> list[str]:
  """The test identities under the dataset builder's own rule, sorted."""
  from wildactor_jax.input.splits import held_out_actors
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


def identity_images(ds: RawDataset, actors) -> tuple[np.ndarray, np.ndarray]:
  """Every frame of the actors' clips and their gallery renders, resized to the clips' frame
  size -> (uint8 (N, H, W, 3), labels (N,) = index into sorted(actors))."""
  actors = sorted(actors)
  images, labels = [], []
  for label, actor in enumerate(actors):
    frames = [read_video(c.video) for c in ds.clips_of(actor)]
    size = frames[0].shape[1:3] if frames else None
    for video in frames:
      images.extend(video)
    for ref in ds.gallery(actor):
      im = read_image(ref.path)
      if size is not None and im.shape[:2] != size:
        im = np.asarray(Image.fromarray(im).resize(size[::-1], Image.BILINEAR))
      images.append(im)
    labels.extend([label] * (len(images) - len(labels)))
  if not images:
    raise RawDataError(f"{ds.root}: no clips or references for the actors {actors[:4]}...")
  return np.stack(images), np.asarray(labels, np.int32)
