"""Reading reference images and writing videos, GIFs and contact sheets (atomically).

Reference images go through the same letterboxing as the training records (`fit_image`),
so a reference at inference looks like one at training. Every output is written to a temporary
name beside the target and renamed, so a failure never leaves a half-written file.
"""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from wildactor_jax import fs

# imageio-ffmpeg starts ffmpeg with preexec_fn=os.setpgrp (to keep Ctrl-C from reaching it),
# which forces a full fork() of this process before the exec: in a process holding JAX's buffers
# and executables each fork copies its page tables (tens of ms; an evaluation reads hundreds of
# clips, 4x its decode time in the test suite) and JAX warns about the fork. Without preexec_fn
# Python spawns with vfork. Ctrl-C then reaches ffmpeg too, which is harmless: every output is
# written to a temporary name and renamed. A user's own setting of the variable wins.
os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")


class MediaError(ValueError):
  """A one-line, user-facing problem with an input or output file."""


def fit_image(data: bytes, height: int, width: int) -> np.ndarray:
  """(height, width, 3) float32 in [-1, 1]: the whole image, letterboxed on white (nothing of a
  face is cropped away); the same for training records and generation references."""
  from PIL import Image, ImageOps
  with Image.open(io.BytesIO(data)) as img:
    img = ImageOps.pad(img.convert("RGB"), (width, height), Image.BICUBIC, color=(255, 255, 255))
  return np.asarray(img, np.float32) / 127.5 - 1.0


def load_reference(path: str, height: int, width: int, what: str) -> np.ndarray:
  """(height, width, 3) float32 in [-1, 1]; `what` names the flag for errors (e.g. --face).
  `path` may be local or gs://."""
  if not fs.isfile(path):
    raise MediaError(f"{what} {path}: no such file")
  data = fs.read_bytes(path)
  try:
    return fit_image(data, height, width)
  except Exception as e:  # PIL raises several types for undecodable data
    raise MediaError(f"{what} {path}: not a decodable image ({type(e).__name__})") from None


def to_uint8(video: np.ndarray) -> np.ndarray:
  return np.round((np.clip(video, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


# Every output goes through the one atomic writer of the file-system layer (local or gs://).
atomic_write = fs.atomic_write


def write_mp4(path: str, frames, fps: int = 16) -> str:
  """frames (T, H, W, 3) uint8 -> H.264 mp4 (crf 16). One thread and bitexact muxing, so
  identical frames give identical bytes (the synthetic data's determinism rests on this)."""
  import imageio_ffmpeg

  def write(tmp):
    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(
        tmp, (w, h), fps=fps, codec="libx264", quality=None, macro_block_size=2,
        output_params=["-crf", "16", "-threads", "1", "-fflags", "+bitexact",
                       "-flags:v", "+bitexact"])
    writer.send(None)
    for frame in frames:
      writer.send(np.ascontiguousarray(frame))
    writer.close()

  return atomic_write(path, write)


def read_mp4(path: str) -> np.ndarray:
  import imageio.v2 as imageio
  with imageio.get_reader(path, format="FFMPEG") as r:
    return np.stack([f for f in r])


def write_gif(path: str, frames: np.ndarray, fps: int = 8) -> str:
  images = [Image.fromarray(f) for f in frames]
  return atomic_write(path, lambda tmp: images[0].save(tmp, format="GIF", save_all=True,
                                                  append_images=images[1:],
                                                  duration=int(1000 / fps), loop=0))


def contact_sheet(references: list[np.ndarray], frames: np.ndarray, columns: int = 8) -> Image.Image:
  """The references in one row, then `columns` frames evenly spaced across the clip."""
  h, w = frames.shape[1:3]
  picks = np.linspace(0, len(frames) - 1, min(columns, len(frames))).round().astype(int)
  cols = max(len(references), len(picks), 1)
  rows = 2 if references else 1
  sheet = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
  for i, ref in enumerate(references):
    sheet.paste(Image.fromarray(ref).resize((w, h)), (i * w, 0))
  for i, k in enumerate(picks):
    sheet.paste(Image.fromarray(frames[k]), (i * w, (rows - 1) * h))
  return sheet


def write_png(path: str, image: Image.Image) -> str:
  return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
