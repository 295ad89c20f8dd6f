"""A small learned causal video autoencoder with the Wan VAE's interface and geometry, for demos.

Wan's VAE (models/vae.py) is the real setting; on a 2-core CPU its 3D convolutions are too slow to
train, so the CPU demo learns this stand-in instead. Wan2.1's VAE geometry (4x temporal, 8x
spatial) and the same causal grouping of frames; 32 latent channels by default (Wan2.1 has 16, at
far larger frames: at 64 px, 16 channels blur a figure's 1-2 px limbs and its trousers):

  encode: video (B, 1 + 4k, H, W, 3) in [-1, 1] -> latents (B, 1 + k, H/8, W/8, z)
          latent 0 reads frame 0 alone (its group is frame 0 repeated, a causal pad as Wan's), latent
          j >= 1 reads frames 4j-3 .. 4j: no latent sees a later frame
  decode: latent 0 -> frame 0; latent j -> its 4 frames, from latents j and j - 1 (causal)

Per frame, 2D convolutions at 1/2 and 1/4 resolution; a group's 4 frames meet in channels (a
space-to-depth in time); 1/8 resolution holds the latent. The posterior is Gaussian (mean,
log-variance) as in Wan's VAE; `encode` returns the mean normalised per channel by
`latents_mean`/`latents_std` (statistics measured on the training clips after training, as Wan's
config holds them), which is what the DiT is trained on.

    ae = init(AutoencoderConfig(), seed=0)
    z = ae.encode(video); video = ae.decode(z)
    save(ae, "autoencoder.npz"); ae = load("autoencoder.npz")
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from wildactor_jax.models import module_npz

TEMPORAL, SPATIAL = 4, 8


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
  z_dim: int = 32
  stem: int = 32            # channels at 1/2 resolution
  width: int = 64           # channels at 1/4 resolution
  latent_width: int = 128   # channels at 1/8 resolution
  latents_mean: tuple[float, ...] = ()   # per channel; () = 0 (set after training)
  latents_std: tuple[float, ...] = ()    # per channel; () = 1

  def stats(self) -> tuple[jax.Array, jax.Array]:
    mean = jnp.asarray(self.latents_mean or (0.0,) * self.z_dim, jnp.float32)
    std = jnp.asarray(self.latents_std or (1.0,) * self.z_dim, jnp.float32)
    return mean, std


def space_to_depth(x: jax.Array, s: int) -> jax.Array:
  n, h, w, c = x.shape
  x = x.reshape(n, h // s, s, w // s, s, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // s, w // s, s * s * c)


def depth_to_space(x: jax.Array, s: int) -> jax.Array:
  n, h, w, c = x.shape
  x = x.reshape(n, h, w, s, s, c // (s * s)).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h * s, w * s, c // (s * s))


def _conv(cin, cout, rngs, kernel=3, stride=1):
  return nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding="SAME", rngs=rngs)


class Residual(nnx.Module):
  def __init__(self, dim: int, rngs: nnx.Rngs):
    self.a, self.b = _conv(dim, dim, rngs), _conv(dim, dim, rngs)

  def __call__(self, x):
    return x + self.b(jax.nn.silu(self.a(jax.nn.silu(x))))


class VideoAutoencoder(nnx.Module):
  temporal_factor, spatial_factor = TEMPORAL, SPATIAL

  def __init__(self, cfg: AutoencoderConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    s, w, lw, z = cfg.stem, cfg.width, cfg.latent_width, cfg.z_dim
    # Encoder: per frame to 1/4, a group's 4 frames together, to 1/8.
    self.enc_stem = _conv(12, s, rngs)
    self.enc_down = _conv(s, w, rngs, stride=2)
    self.enc_frame = Residual(w, rngs)
    self.enc_group = _conv(TEMPORAL * w, lw, rngs, kernel=1)
    self.enc_latent_down = _conv(lw, lw, rngs, stride=2)
    self.enc_latent = Residual(lw, rngs)
    self.enc_moments = _conv(lw, 2 * z, rngs, kernel=1)
    # Decoder: the latent and its predecessor, up to 1/4, 4 frames out of channels, per frame up.
    self.dec_in = _conv(2 * z, lw, rngs)
    self.dec_latent = Residual(lw, rngs)
    self.dec_up = _conv(lw, 4 * w, rngs, kernel=1)
    self.dec_group = _conv(w, TEMPORAL * w, rngs)
    self.dec_frame = Residual(w, rngs)
    self.dec_up_frame = _conv(w, 4 * s, rngs, kernel=1)
    self.dec_out = _conv(s, 12, rngs)

  @property
  def z_dim(self) -> int:
    return self.config.z_dim

  def moments(self, video: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(B, 1+4k, H, W, 3) -> un-normalised posterior mean and log-variance (B, 1+k, H/8, W/8, z)."""
    b, t, h, w, _ = video.shape
    x = space_to_depth(video.reshape(b * t, h, w, 3), 2)
    x = self.enc_frame(self.enc_down(jax.nn.silu(self.enc_stem(x))))
    x = x.reshape(b, t, *x.shape[1:])
    x = jnp.concatenate([jnp.repeat(x[:, :1], TEMPORAL - 1, axis=1), x], axis=1)  # causal pad
    k = x.shape[1] // TEMPORAL
    x = x.reshape(b, k, TEMPORAL, *x.shape[2:]).transpose(0, 1, 3, 4, 2, 5)
    x = x.reshape(b * k, *x.shape[2:4], -1)
    x = self.enc_latent(self.enc_latent_down(jax.nn.silu(self.enc_group(x))))
    m = self.enc_moments(jax.nn.silu(x)).reshape(b, k, *x.shape[1:3], -1).astype(jnp.float32)
    return m[..., :self.z_dim], jnp.clip(m[..., self.z_dim:], -12.0, 6.0)

  def reconstruct(self, z: jax.Array) -> jax.Array:
    """Un-normalised latents (B, 1+k, h, w, z) -> video (B, 1+4k, 8h, 8w, 3), not clipped."""
    b, k, h, w, _ = z.shape
    prev = jnp.concatenate([z[:, :1], z[:, :-1]], axis=1)
    x = jnp.concatenate([z, prev], axis=-1).reshape(b * k, h, w, -1)
    x = self.dec_latent(self.dec_in(x))
    x = depth_to_space(self.dec_up(jax.nn.silu(x)), 2)                    # (bk, 2h, 2w, width)
    x = self.dec_group(jax.nn.silu(x))
    x = x.reshape(b, k, 2 * h, 2 * w, TEMPORAL, -1).transpose(0, 1, 4, 2, 3, 5)
    rest = x[:, 1:].reshape(b, TEMPORAL * (k - 1), *x.shape[3:])
    x = jnp.concatenate([x[:, 0, -1:], rest], axis=1)  # latent 0 -> frame 0 only
    frames = x.shape[1]
    x = self.dec_frame(x.reshape(b * frames, 2 * h, 2 * w, -1))
    x = depth_to_space(self.dec_up_frame(jax.nn.silu(x)), 2)
    x = depth_to_space(self.dec_out(jax.nn.silu(x)), 2)
    return x.reshape(b, frames, 8 * h, 8 * w, 3)

  # -- the Wan VAE interface --------------------------------------------------------------------
  @property
  def latents_mean(self):
    return self.config.latents_mean

  @property
  def latents_std(self):
    return self.config.latents_std

  def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    check_geometry(frames, height, width)
    return (1 + (frames - 1) // TEMPORAL, height // SPATIAL, width // SPATIAL, self.z_dim)

  def encode(self, video) -> jax.Array:
    video = jnp.asarray(video)
    if video.ndim != 5 or video.shape[-1] != 3:
      raise ValueError(f"video shape {video.shape}: expected (B, T, H, W, 3)")
    check_geometry(*video.shape[1:4])
    graphdef, state = nnx.split(self)
    return _encode(graphdef, state, video)

  def decode(self, latents) -> jax.Array:
    latents = jnp.asarray(latents)
    if latents.ndim != 5 or latents.shape[-1] != self.z_dim:
      raise ValueError(f"latents shape {latents.shape}: expected (B, T', h, w, {self.z_dim})")
    graphdef, state = nnx.split(self)
    return _decode(graphdef, state, latents)


def check_geometry(frames: int, height: int, width: int) -> None:
  if (frames - 1) % TEMPORAL or height % SPATIAL or width % SPATIAL:
    raise ValueError(f"video (T={frames}, H={height}, W={width}): expected T = 1 + {TEMPORAL}k and "
                     f"H, W divisible by {SPATIAL}")


@functools.partial(jax.jit, static_argnums=0)
def _encode(graphdef, state, video):
  model = nnx.merge(graphdef, state)
  mean, std = model.config.stats()
  mu, _ = model.moments(video.astype(jnp.float32))
  return ((mu - mean) / std).astype(video.dtype)


@functools.partial(jax.jit, static_argnums=0)
def _decode(graphdef, state, latents):
  model = nnx.merge(graphdef, state)
  mean, std = model.config.stats()
  return jnp.clip(model.reconstruct(latents.astype(jnp.float32) * std + mean), -1.0, 1.0)


def init(cfg: AutoencoderConfig = AutoencoderConfig(), seed: int = 0) -> VideoAutoencoder:
  return VideoAutoencoder(cfg, rngs=nnx.Rngs(seed))


def with_stats(model: VideoAutoencoder, mean, std) -> VideoAutoencoder:
  """The same weights with new latent statistics (per channel)."""
  cfg = dataclasses.replace(model.config, latents_mean=tuple(float(m) for m in mean),
                            latents_std=tuple(float(s) for s in std))
  out = init(cfg)
  nnx.update(out, nnx.state(model, nnx.Param))
  return out


def save(model: VideoAutoencoder, path: str, dtype: str = "float32") -> str:
  return module_npz.save(model, path, {"kind": "video_autoencoder",
                                       "config": dataclasses.asdict(model.config)}, dtype)


def load(path: str) -> VideoAutoencoder:
  meta = module_npz.read_meta(path, "video autoencoder")
  if meta.get("kind") != "video_autoencoder":
    raise ValueError(f"{path}: not a video autoencoder (kind {meta.get('kind')!r})")
  cfg = AutoencoderConfig(**{k: tuple(v) if isinstance(v, list) else v
                             for k, v in meta["config"].items()})
  return module_npz.build_and_load(lambda: init(cfg), path, "video autoencoder")
