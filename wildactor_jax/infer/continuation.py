"""Extending clips past one window: continuation on a single reference cache.

A window is the clip length the model denoises at once (T' latent frames, the trained length by
default). Training teaches continuation on a clip's own first K latent frames, held clean: latent
0 is the causal VAE's single-frame latent of the clip's first frame, latents 1..K-1 its next
4-frame groups (`input/records_source.py`). Inference gives the model exactly that: a window
starts as a clip of its own whose first frames are the last 1 + 4 (K - 1) frames of the video so
far, re-encoded by the causal VAE (so its latent 0 is again a single-frame latent) and kept clean
(the sampler keeps them bit-identical, `inference.denoise`); the window is decoded and the frames
after its context are the new ones, 4 per new latent frame. The context is therefore decoded,
re-encoded and decoded again: what the model continues is the video as it is seen, never a
mid-clip latent standing in for a clip's first frame (which a causal VAE's latent 0 is not).

The references' K/V depend on neither the prompt nor the window's content, only on its grid, so
one cache serves every window of a story.

Frame arithmetic (the causal VAE's, Wan's and the pixel autoencoder's): L latent frames decode to
1 + 4 (L - 1) frames; each appended latent frame adds 4.
"""
from __future__ import annotations

import io
import time
from typing import Callable

import jax
import numpy as np

from wildactor_jax import fs, inference
from wildactor_jax.inference import GenerationSettings
from wildactor_jax.media import MediaError


def window_noise(seed: int, index: int, shape) -> jax.Array:
  """The initial noise of window `index` of a clip or story sampled with `seed`."""
  return jax.random.normal(jax.random.fold_in(jax.random.key(seed), index), shape)


def frames_of(latent_frames: int, temporal_factor: int = 4) -> int:
  """Frames that `latent_frames` latent frames decode to (1 + 4 (L - 1))."""
  return 1 + temporal_factor * (latent_frames - 1) if latent_frames else 0


def context_latents(video_frames: int, context_frames: int, temporal_factor: int = 4) -> int:
  """Latent frames of the context a window gets after a video of `video_frames` frames: K, or
  fewer when the video is shorter than the 1 + 4 (K - 1) frames K latent frames stand for."""
  return min(context_frames, 1 + (video_frames - 1) // temporal_factor)


def decode_chain(vae, latents: np.ndarray) -> np.ndarray:
  """(1, L, H', W', C) latents -> (1 + 4 (L - 1), H, W, 3) float32 in [-1, 1], in one pass."""
  return np.clip(np.asarray(vae.decode(latents), np.float32)[0], -1.0, 1.0)


def encode_clip(vae, frames: np.ndarray) -> np.ndarray:
  """(1 + 4k, H, W, 3) float32 frames in [-1, 1] -> their latents (1, 1 + k, H', W', C), as the
  causal VAE encodes a clip from its start (latent 0 = frame 0 alone)."""
  return np.asarray(vae.encode(np.asarray(frames, np.float32)[None]), np.float32)


def last_frames(parts: list[np.ndarray], n: int) -> np.ndarray:
  """The last `n` frames of the video the `parts` make back to back (only those are copied)."""
  taken, count = [], 0
  for part in reversed(parts):
    taken.append(part[max(0, len(part) - (n - count)):])
    count += len(taken[-1])
    if count >= n:
      break
  return np.concatenate(taken[::-1])


class Extender:
  """Samples windows for one model, VAE, reference cache, settings and seed.

  ext = Extender(model, vae, cache, s, grid, seed)  # grid: the window's latent grid (T', H', W')
  latents = ext.fresh(text)                         # (1, T', H', W', C): a window from noise
  video = ext.extend(video, text, new, K)           # video (N, H, W, 3) + `new` frames
  Window i (counted across calls) starts from noise (seed, i): the same calls give the same
  frames. `contexts` records each continued window's clean context latents (what the model was
  given), `vae_s` the seconds spent encoding and decoding.
  """

  def __init__(self, model, vae, cache, s: GenerationSettings, grid: tuple[int, int, int],
               seed: int, on_step: Callable[[int, float], None] | None = None):
    self.model, self.vae, self.cache, self.s, self.grid = model, vae, cache, s, tuple(grid)
    self.seed, self.on_step = seed, on_step
    self.shape = (1,) + self.grid + (model.cfg.in_channels,)
    self.tf = int(vae.temporal_factor)
    self.step_times: list[float] = []
    self.contexts: list[np.ndarray] = []
    self.windows = 0
    self.vae_s = 0.0

  def _window(self, text, context):
    noise = window_noise(self.seed, self.windows, self.shape)
    latents, times = inference.sample_latents(self.model, text, self.cache, self.s, self.grid,
                                              noise, context, self.on_step)
    self.step_times.extend(times)
    self.windows += 1
    return latents

  def fresh(self, text) -> np.ndarray:
    """A window from noise alone (the start of a clip or of a cut)."""
    return self._window(text, None)

  def decode(self, latents: np.ndarray) -> np.ndarray:
    t0 = time.perf_counter()
    video = decode_chain(self.vae, latents)
    self.vae_s += time.perf_counter() - t0
    return video

  def extend(self, video: np.ndarray, text, new: int, context_frames: int) -> np.ndarray:
    """video (N, H, W, 3) float32 in [-1, 1] followed by `new` generated frames, by windows that
    each start as a clip of the video's last 1 + 4 (K - 1) frames, re-encoded and kept clean
    (K = context_frames, fewer while the video is shorter); the video's own frames come back
    unchanged."""
    t = self.grid[0]
    if not 0 < context_frames < t:
      raise ValueError(f"context frames {context_frames}: expected 1 .. {t - 1} (a window has "
                       f"{t} latent frames and at least one must be new)")
    video = np.asarray(video, np.float32)
    want = (self.grid[1] * self.vae.spatial_factor, self.grid[2] * self.vae.spatial_factor)
    if video.ndim != 4 or not len(video) or tuple(video.shape[1:3]) != want:
      raise ValueError(f"video {tuple(video.shape)}: expected (N >= 1, {want[0]}, {want[1]}, 3) "
                       "for this window")
    parts, total, made = [video], len(video), 0
    while made < new:
      k = context_latents(total, context_frames, self.tf)
      tail = frames_of(k, self.tf)
      recent = last_frames(parts, tail)
      t0 = time.perf_counter()
      context = encode_clip(self.vae, recent)
      self.vae_s += time.perf_counter() - t0
      self.contexts.append(context)
      fresh = self.decode(self._window(text, context))[tail:][:new - made]
      parts.append(fresh)
      made += len(fresh)
      total += len(fresh)
    return np.concatenate(parts)


def load_context(path: str, vae, height: int, width: int, what: str = "--continue-from"):
  """A clip to continue -> (its frames (N, H, W, 3) float32 in [-1, 1], the same frames as uint8
  when they came from an mp4, else None).

  .npy: latents (L, H', W', C) or (1, L, H', W', C) as `generate --save-latents` writes them,
  decoded. .mp4: its frames, any count (a continuation re-encodes only its last few).
  One-line MediaErrors for missing, undecodable or mis-sized input."""
  if not fs.isfile(path):
    raise MediaError(f"{what} {path}: no such file")
  sf = int(vae.spatial_factor)
  if path.endswith(".npy"):
    try:
      latents = np.load(io.BytesIO(fs.read_bytes(path)), allow_pickle=False)
    except (ValueError, OSError) as e:
      raise MediaError(f"{what} {path}: not a readable .npy ({e})") from None
    latents = latents[None] if latents.ndim == 4 else latents
    want = (height // sf, width // sf, int(vae.z_dim))
    if latents.ndim != 5 or latents.shape[0] != 1 or tuple(latents.shape[2:]) != want:
      raise MediaError(f"{what} {path}: latents {tuple(latents.shape)}, expected (L, "
                       f"{', '.join(map(str, want))}) for {height}x{width} video")
    return decode_chain(vae, np.asarray(latents, np.float32)), None
  if not path.endswith(".mp4"):
    raise MediaError(f"{what} {path}: expected a .mp4 clip or a .npy of latents")
  from wildactor_jax import media
  try:
    frames = media.read_mp4(fs.local_path(path, what))
  except Exception as e:  # ffmpeg raises several types for undecodable data
    raise MediaError(f"{what} {path}: not a decodable video ({type(e).__name__})") from None
  if frames.shape[1:3] != (height, width):
    raise MediaError(f"{what} {path}: {frames.shape[2]}x{frames.shape[1]} frames, expected "
                     f"{width}x{height} (--width/--height)")
  return frames.astype(np.float32) / 127.5 - 1.0, frames


def clip_latents(vae, video: np.ndarray) -> np.ndarray:
  """The latents a clip's frames encode to, for saving it to continue later: its last 1 + 4k
  frames (all of them when the count is 1 + 4k, as every generated clip's is)."""
  tf = int(vae.temporal_factor)
  return encode_clip(vae, video[(len(video) - 1) % tf:])
