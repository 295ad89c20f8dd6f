"""Extending clips past one window: continuation on a single reference cache, seamless decoding.

A window is the clip length the model denoises at once (T' latent frames, the trained length by
default). A clip grows by windows whose first K latent frames are the clip's last K, clean (the
sampler keeps them bit-identical, `inference.denoise`); each window adds T' - K new latent frames.
The references' K/V depend on neither the prompt nor the window's content, only on its grid, so
one cache serves every window of a story.

Seams: latents are only ever appended, and a chain of continued latents is decoded in one pass
(`decode_chain`), so the overlapping context is decoded once and no frame is duplicated. For a
clip known only as pixels (an mp4), its own frames are kept and the frames that decode from the
new latents are appended (`new_frames`).

Frame arithmetic (the causal VAE's, Wan's and the pixel autoencoder's): L latent frames decode to
1 + 4 (L - 1) frames; each appended latent frame adds 4.
"""
from __future__ import annotations

import io
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


class Extender:
  """Samples windows for one model, reference cache, settings and seed.

  ext = Extender(model, cache, s, grid, seed)   # grid: the window's latent grid (T', H', W')
  chain = ext.fresh(text)                       # (1, T', H', W', C): a window from noise
  chain = ext.extend(chain, text, new, K)       # + `new` latent frames
  Window i (counted across calls) starts from noise (seed, i): the same calls give the same
  latents.
  """

  def __init__(self, model, cache, s: GenerationSettings, grid: tuple[int, int, int],
               seed: int, on_step: Callable[[int, float], None] | None = None):
    self.model, self.cache, self.s, self.grid = model, cache, s, tuple(grid)
    self.seed, self.on_step = seed, on_step
    self.shape = (1,) + self.grid + (model.cfg.in_channels,)
    self.step_times: list[float] = []
    self.windows = 0

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

  def extend(self, chain: np.ndarray, text, new: int, context_frames: int) -> np.ndarray:
    """chain (1, L, H', W', C) + `new` latent frames, by windows that start from the chain's last
    min(K, L) latent frames (kept clean). The chain's own frames come back unchanged."""
    t = self.grid[0]
    if not 0 < context_frames < t:
      raise ValueError(f"context frames {context_frames}: expected 1 .. {t - 1} (a window has "
                       f"{t} latent frames and at least one must be new)")
    if tuple(chain.shape[2:]) != self.shape[2:]:
      raise ValueError(f"latents {tuple(chain.shape)}: expected (1, L, "
                       f"{', '.join(map(str, self.shape[2:]))}) for this model and size")
    parts, made = [np.asarray(chain, np.float32)], 0
    while made < new:
      context = np.concatenate(parts, axis=1)[:, -context_frames:]
      fresh = self._window(text, context)[:, context.shape[1]:][:, :new - made]
      parts.append(fresh)
      made += fresh.shape[1]
    return np.concatenate(parts, axis=1)


def decode_chain(vae, latents: np.ndarray) -> np.ndarray:
  """(1, L, H', W', C) latents -> (1 + 4 (L - 1), H, W, 3) float32 in [-1, 1], in one pass."""
  return np.clip(np.asarray(vae.decode(latents), np.float32)[0], -1.0, 1.0)


def new_frames(vae, chain: np.ndarray, old: int) -> np.ndarray:
  """The frames that a chain's latents after its first `old` decode to (4 per latent frame),
  decoded together with the chain's last old frames as context so they join without a seam."""
  lead = min(old, 4)  # a few latent frames of context warm the causal decoder
  video = decode_chain(vae, chain[:, old - lead:])
  return video[frames_of(lead, int(vae.temporal_factor)):]


def load_context(path: str, vae, height: int, width: int, what: str = "--continue-from"):
  """A clip to continue -> (latents (1, L, H', W', C) float32, its frames uint8 or None).

  .npy: latents (L, H', W', C) or (1, L, H', W', C) as `generate --save-latents` writes them.
  .mp4: read and VAE-encoded; a clip of N frames with N != 1 + 4k loses its first (N - 1) % 4
  frames (latent frame 0 stands for one frame, every other for four), which stay in the output.
  One-line MediaErrors for missing, undecodable or mis-sized input."""
  if not fs.isfile(path):
    raise MediaError(f"{what} {path}: no such file")
  tf, sf = int(vae.temporal_factor), int(vae.spatial_factor)
  if path.endswith(".npy"):
    try:
      latents = np.load(io.BytesIO(fs.read_bytes(path)), allow_pickle=False)
    except (ValueError, OSError) as e:
      raise MediaError(f"{what} {path}: not a readable .npy ({e})") from None
    latents = latents[None] if latents.ndim == 4 else latents
    want = (height // sf, width // sf)
    if latents.ndim != 5 or latents.shape[0] != 1 or tuple(latents.shape[2:4]) != want:
      raise MediaError(f"{what} {path}: latents {tuple(latents.shape)}, expected (L, {want[0]}, "
                       f"{want[1]}, C) for {height}x{width} video")
    return np.asarray(latents, np.float32), None
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
  usable = frames[(len(frames) - 1) % tf:]
  video = usable.astype(np.float32)[None] / 127.5 - 1.0
  return np.asarray(vae.encode(video), np.float32), frames
