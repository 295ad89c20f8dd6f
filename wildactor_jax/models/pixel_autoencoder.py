"""A fixed, parameter-free autoencoder with the Wan VAE's interface and geometry, for demos.

The CPU demo cannot use a real Wan VAE (random weights do not reconstruct anything), so this
stands in for it with the same shapes:

  encode: video (B, T, H, W, 3) in [-1, 1], T = 1 + 4k
          -> frame 0 alone, then the mean of each following group of 4 frames (Wan's causal VAE
             groups frames the same way: 1 + 4k frames -> 1 + k latent frames)
          -> space-to-depth by s (default 4: 3 * 4 * 4 = 48 channels, like Wan2.2's z48)
          -> latents (B, 1 + k, H / s, W / s, 3 s^2)
  decode: depth-to-space, then frame 0 once and every other latent frame 4 times.

decode(encode(x)) == x exactly for a clip that is constant within each 4-frame group. Works on
numpy or jax arrays (jnp ops), jit-able; latents keep the input's dtype.

Latent normalisation, as the Wan VAE does with its per-channel statistics: encode returns
(pixels - latents_mean) / latents_std, decode undoes it. It matters for sampling: a flow model
leaves a small residual of noise at the end (its velocity is least precise at low noise), and
pixels shown as they are expose that residual as grain. Normalised to about unit variance (the
data's pixel std is about 0.4 on the synthetic actors), the same latent residual is 2.5 times
smaller in pixels, as a learned VAE's latents would make it.
"""
from __future__ import annotations

import jax.numpy as jnp


class PixelAutoencoder:
  """Same method names and attributes as the Wan VAE wrapper (`models.load_vae`)."""

  temporal_factor = 4

  def __init__(self, spatial_factor: int = 4, latents_mean: float = 0.0, latents_std: float = 1.0):
    if spatial_factor < 1:
      raise ValueError(f"spatial_factor {spatial_factor}: expected >= 1")
    if not latents_std > 0:
      raise ValueError(f"latents_std {latents_std}: expected > 0")
    self.spatial_factor = int(spatial_factor)
    self.z_dim = 3 * self.spatial_factor ** 2
    self.latents_mean, self.latents_std = float(latents_mean), float(latents_std)

  def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    self._check(frames, height, width)
    s = self.spatial_factor
    return (1 + (frames - 1) // self.temporal_factor, height // s, width // s, self.z_dim)

  def _check(self, frames: int, height: int, width: int) -> None:
    s, t = self.spatial_factor, self.temporal_factor
    if (frames - 1) % t or height % s or width % s:
      raise ValueError(f"video (T={frames}, H={height}, W={width}): expected T = 1 + {t}k and "
                       f"H, W divisible by {s}")

  def encode(self, video):
    video = jnp.asarray(video)
    if video.ndim != 5 or video.shape[-1] != 3:
      raise ValueError(f"video shape {video.shape}: expected (B, T, H, W, 3)")
    b, t, h, w, _ = video.shape
    self._check(t, h, w)
    k, s = (t - 1) // self.temporal_factor, self.spatial_factor
    groups = video[:, 1:].reshape(b, k, self.temporal_factor, h, w, 3).mean(axis=2)
    frames = jnp.concatenate([video[:, :1], groups.astype(video.dtype)], axis=1)
    x = frames.reshape(b, 1 + k, h // s, s, w // s, s, 3)
    z = x.transpose(0, 1, 2, 4, 3, 5, 6).reshape(b, 1 + k, h // s, w // s, self.z_dim)
    return ((z - self.latents_mean) / self.latents_std).astype(video.dtype)

  def decode(self, latents):
    latents = jnp.asarray(latents)
    if latents.ndim != 5 or latents.shape[-1] != self.z_dim:
      raise ValueError(f"latents shape {latents.shape}: expected (B, T', H', W', {self.z_dim})")
    b, tl, hl, wl, _ = latents.shape
    s = self.spatial_factor
    latents = latents * self.latents_std + self.latents_mean
    x = latents.reshape(b, tl, hl, wl, s, s, 3).transpose(0, 1, 2, 4, 3, 5, 6)
    frames = x.reshape(b, tl, hl * s, wl * s, 3)
    rest = jnp.repeat(frames[:, 1:], self.temporal_factor, axis=1)
    return jnp.concatenate([frames[:, :1], rest], axis=1)
