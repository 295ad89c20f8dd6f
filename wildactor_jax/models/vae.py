"""The Wan video VAE (Wan2.1: 4x8x8, z16; Wan2.2: 4x16x16, z48) in Flax NNX, channels-last.

    vae = load_vae(path)    # converted by `python -m wildactor_jax.convert --kind vae`
    z = vae.encode(video)   # (B, 1+4k, H, W, 3) in [-1, 1] -> (B, 1+k, H/s, W/s, z_dim)
    video = vae.decode(z)   # the inverse, clipped to [-1, 1]

Both variants share one implementation (as in diffusers' `AutoencoderKLWan`): Wan2.2 adds a 2x2
pixel patchify (12 channels in/out), residual down/up stages with parameter-free shortcuts and a
separate decoder width. Parameter names mirror diffusers' module names (`weight` -> `kernel`), so
the converter is a near-identity mapping.

Latent normalisation: `encode` returns the posterior MEAN normalised per channel,
`(mu - latents_mean) / latents_std`, which is what the DiT is trained on (diffusers' Wan pipelines
do the same). The statistics come from the checkpoint config: for Wan2.1 (z16) the 16 values of
`AutoencoderKLWan`'s defaults, for Wan2.2 (z48) the 48 values of the Wan2.2-TI2V-5B VAE config;
`decode` un-normalises first. Other z_dims (tiny test models) default to mean 0, std 1.

Streaming: time is processed in Wan's causal chunks (encode: frame 0, then 4 frames per chunk;
decode: one latent frame per chunk) with the causal cache as an explicit pytree. One jitted
program runs the first chunk and then a `lax.scan` over the remaining ones: the per-chunk body is
compiled once, the cache is a loop carry that XLA updates in place, and there is no per-chunk
host dispatch or sync. Activation memory is that of one chunk; the full input and output clips
live on the device (121 frames at 704x1280 RGB is 1.3 GB in float32). Decode can also be tiled
spatially (`decode(z, tile=...)`) for large frames.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wildactor_jax.models.vae_blocks import (
    CausalConv3d, ChannelRMSNorm, MidBlock, Resample, ResidualBlock, ResidualDownBlock, Stream,
    UpBlock, one_by_one)
from wildactor_jax.models.vae_stats import default_latent_stats
from wildactor_jax.models.vae_tiling import tiled_decode


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """diffusers `AutoencoderKLWan` config fields (same names, so config.json files carry over)."""
  base_dim: int = 96
  decoder_base_dim: int | None = None
  z_dim: int = 16
  dim_mult: tuple[int, ...] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  attn_scales: tuple[float, ...] = ()
  temperal_downsample: tuple[bool, ...] = (False, True, True)
  is_residual: bool = False
  in_channels: int = 3
  out_channels: int = 3
  patch_size: int | None = None
  latents_mean: tuple[float, ...] | None = None
  latents_std: tuple[float, ...] | None = None

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> VAEConfig:
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
    cfg = cls(**kw)
    if cfg.decoder_base_dim is None:  # diffusers: None means "same as the encoder"
      cfg = dataclasses.replace(cfg, decoder_base_dim=cfg.base_dim)
    if cfg.latents_mean is None or cfg.latents_std is None:
      mean, std = default_latent_stats(cfg.z_dim)
      cfg = dataclasses.replace(cfg, latents_mean=cfg.latents_mean or mean,
                                latents_std=cfg.latents_std or std)
    cfg.validate()
    return cfg

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

  def validate(self) -> None:
    if self.attn_scales:
      raise ValueError(f"attn_scales={list(self.attn_scales)}: only [] (as in every Wan VAE) "
                       "is supported")
    if len(self.temperal_downsample) != len(self.dim_mult) - 1:
      raise ValueError(f"temperal_downsample needs {len(self.dim_mult) - 1} entries, "
                       f"got {list(self.temperal_downsample)}")
    if self.in_channels != 3 * self.patch ** 2 or self.out_channels != 3 * self.patch ** 2:
      raise ValueError(f"in/out_channels {self.in_channels}/{self.out_channels} do not match RGB "
                       f"with patch_size {self.patch_size} (expected {3 * self.patch ** 2})")
    if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
      raise ValueError(f"latents_mean/std need {self.z_dim} values each")

  @property
  def patch(self) -> int:
    return self.patch_size or 1

  @property
  def temporal_factor(self) -> int:
    return 2 ** sum(bool(t) for t in self.temperal_downsample)

  @property
  def spatial_factor(self) -> int:
    return 2 ** (len(self.dim_mult) - 1) * self.patch


# Real model configs (diffusers naming). Tests and demos use tiny variants of these.
WAN21_VAE = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                 temperal_downsample=[False, True, True])
WAN22_VAE = dict(base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4],
                 num_res_blocks=2, temperal_downsample=[False, True, True], is_residual=True,
                 in_channels=12, out_channels=12, patch_size=2)


class Encoder(nnx.Module):

  def __init__(self, cfg: VAEConfig, *, rngs, param_dtype, dtype):
    kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
    dims = [cfg.base_dim * u for u in (1,) + tuple(cfg.dim_mult)]
    self.conv_in = CausalConv3d(cfg.in_channels, dims[0], **kw)
    blocks: list[nnx.Module] = []
    n = len(cfg.dim_mult)
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
      last = i == n - 1
      temporal = bool(cfg.temperal_downsample[i]) if not last else False
      if cfg.is_residual:
        blocks.append(ResidualDownBlock(in_dim, out_dim, cfg.num_res_blocks, temporal=temporal,
                                        down=not last, **kw))
        continue
      for _ in range(cfg.num_res_blocks):
        blocks.append(ResidualBlock(in_dim, out_dim, **kw))
        in_dim = out_dim
      if not last:
        blocks.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d", **kw))
    self.down_blocks = nnx.List(blocks)
    self.mid_block = MidBlock(dims[-1], **kw)
    self.norm_out = ChannelRMSNorm(dims[-1], rngs=rngs, param_dtype=param_dtype)
    self.conv_out = CausalConv3d(dims[-1], 2 * cfg.z_dim, **kw)  # mean and log-variance

  def __call__(self, x, stream: Stream, first: bool):
    x = self.conv_in(x, stream)
    for block in self.down_blocks:
      x = block(x, stream, first)
    x = self.mid_block(x, stream)
    return self.conv_out(jax.nn.silu(self.norm_out(x)), stream)


class Decoder(nnx.Module):

  def __init__(self, cfg: VAEConfig, *, rngs, param_dtype, dtype):
    kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
    base = cfg.decoder_base_dim or cfg.base_dim
    mult = tuple(cfg.dim_mult)
    dims = [base * u for u in (mult[-1],) + mult[::-1]]
    upsample_t = tuple(cfg.temperal_downsample)[::-1]
    self.conv_in = CausalConv3d(cfg.z_dim, dims[0], **kw)
    self.mid_block = MidBlock(dims[0], **kw)
    blocks = []
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
      if i > 0 and not cfg.is_residual:
        in_dim //= 2  # Wan2.1's upsamplers halve the channels
      mode = None
      if i != len(mult) - 1:
        mode = "upsample3d" if upsample_t[i] else "upsample2d"
      blocks.append(UpBlock(in_dim, out_dim, cfg.num_res_blocks, mode=mode,
                            residual=cfg.is_residual, **kw))
    self.up_blocks = nnx.List(blocks)
    self.norm_out = ChannelRMSNorm(dims[-1], rngs=rngs, param_dtype=param_dtype)
    self.conv_out = CausalConv3d(dims[-1], cfg.out_channels, **kw)

  def __call__(self, x, stream: Stream, first: bool):
    x = self.conv_in(x, stream)
    x = self.mid_block(x, stream)
    for block in self.up_blocks:
      x = block(x, stream, first)
    return self.conv_out(jax.nn.silu(self.norm_out(x)), stream)


def patchify(x: jax.Array, p: int) -> jax.Array:
  """(B,T,H,W,C) -> (B,T,H/p,W/p,C*p*p), channel order c*p*p + pw*p + ph as Wan2.2's."""
  if p == 1:
    return x
  b, t, h, w, c = x.shape
  x = x.reshape(b, t, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 6, 5, 3)
  return x.reshape(b, t, h // p, w // p, c * p * p)


def unpatchify(x: jax.Array, p: int) -> jax.Array:
  if p == 1:
    return x
  b, t, h, w, cp = x.shape
  x = x.reshape(b, t, h, w, cp // (p * p), p, p).transpose(0, 1, 2, 6, 3, 5, 4)
  return x.reshape(b, t, h * p, w * p, cp // (p * p))


class WanVAE(nnx.Module):
  """Wan2.1 / Wan2.2 VAE. `encode`/`decode` take and return channels-last arrays."""

  def __init__(self, config: dict | VAEConfig, *, rngs: nnx.Rngs | None = None,
               dtype=jnp.float32, param_dtype=jnp.float32):
    cfg = config if isinstance(config, VAEConfig) else VAEConfig.from_dict(config)
    kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
    self.config = cfg
    self.encoder = Encoder(cfg, **kw)
    self.quant_conv = one_by_one(2 * cfg.z_dim, 2 * cfg.z_dim, **kw)
    self.post_quant_conv = one_by_one(cfg.z_dim, cfg.z_dim, **kw)
    self.decoder = Decoder(cfg, **kw)
    self.dtype = dtype
    self.z_dim = cfg.z_dim
    self.temporal_factor = cfg.temporal_factor
    self.spatial_factor = cfg.spatial_factor
    self.video_channels = cfg.in_channels // cfg.patch ** 2

  # -- one chunk of the stream (pure given the Stream's cache) --------------------------------
  def moments_chunk(self, x, stream: Stream, first: bool):
    """The posterior's mean and log-variance, concatenated over channels (2 z_dim)."""
    return self.quant_conv(self.encoder(x, stream, first))

  def encode_chunk(self, x, stream: Stream, first: bool):
    return self.moments_chunk(x, stream, first)[..., :self.z_dim]

  def decode_chunk(self, z, stream: Stream, first: bool):
    return self.decoder(self.post_quant_conv(z), stream, first)

  # -- public API ------------------------------------------------------------------------------
  def encode(self, video) -> jax.Array:
    """(B, 1+4k, H, W, 3) in [-1, 1] -> normalised latent mean (B, 1+k, H/s, W/s, z_dim)."""
    check_video(video, self.video_channels, self.spatial_factor)
    graphdef, state = nnx.split(self)
    return _encode(graphdef, state, jnp.asarray(video))

  def decode(self, latents, tile: tuple[int, int] | None = None,
             overlap: tuple[int, int] = (2, 2)) -> jax.Array:
    """Normalised latents (B, T', h, w, z_dim) -> video (B, 1+4(T'-1), h*s, w*s, 3) in [-1, 1].

    tile=(th, tw): decode overlapping latent tiles of that size (overlap in latent pixels) and
    blend them linearly, bounding activation memory for large frames; results differ slightly
    from untiled decoding near tile seams (the receptive field is cut), as in diffusers.
    """
    check_latents(latents, self.z_dim)
    graphdef, state = nnx.split(self)
    latents = jnp.asarray(latents)
    if tile is None:
      return _decode(graphdef, state, latents)
    return tiled_decode(lambda z: _decode(graphdef, state, z), latents, tile, overlap,
                        self.spatial_factor)


def check_video(video, channels: int, spatial: int) -> None:
  """One-line ValueErrors for inputs the VAE cannot encode faithfully."""
  shape = tuple(getattr(video, "shape", ()))
  if len(shape) != 5:
    raise ValueError(f"video: expected a 5-D array (B, T, H, W, {channels}), got shape {shape}")
  _, t, h, w, c = shape
  if c != channels:
    raise ValueError(f"video: expected {channels} channels last (B, T, H, W, {channels}), got {c}")
  if t % 4 != 1:
    raise ValueError(f"video: expected 1 + 4k frames (1, 5, 9, ...), got {t}")
  if h % spatial or w % spatial:
    raise ValueError(f"video: expected height and width divisible by {spatial}, got {h}x{w}")
  if not isinstance(video, jax.core.Tracer):  # under jit the caller owns the range
    xp = np if isinstance(video, np.ndarray) else jnp  # numpy input: no device round trip
    lo, hi = float(xp.min(video)), float(xp.max(video))
    if not (lo >= -1.001 and hi <= 1.001):
      raise ValueError(f"video: expected values in [-1, 1], got range [{lo:.4g}, {hi:.4g}]")


def check_latents(latents, z_dim: int) -> None:
  shape = tuple(getattr(latents, "shape", ()))
  if len(shape) != 5 or shape[-1] != z_dim:
    raise ValueError(f"latents: expected (B, T, h, w, {z_dim}) channels last, got shape {shape}")


def _stream(graphdef, state, method: str, first, rest):
  """Runs `method` on the first chunk with a fresh cache, then scans the later chunks.

  first: (B, t0, ...); rest: (n, B, t, ...) or None. Returns (B, t0' + n t', ...). The module is
  merged inside each step so the scan body only closes over arrays.
  """
  def step(cache, chunk, is_first):
    model = nnx.merge(graphdef, state)
    stream = Stream(cache)
    out = getattr(model, method)(chunk, stream, is_first)
    return stream.new, out

  cache, out0 = step(None, first, True)
  if rest is None:
    return out0
  _, outs = jax.lax.scan(lambda c, x: step(c, x, False), cache, rest)
  outs = jnp.moveaxis(outs, 0, 1)
  outs = outs.reshape((outs.shape[0], -1) + outs.shape[3:])
  return jnp.concatenate([out0, outs], axis=1)


def _stats(cfg: VAEConfig):
  return (jnp.asarray(cfg.latents_mean, jnp.float32), jnp.asarray(cfg.latents_std, jnp.float32))


def _chunks(video, patch: int):
  """(frame 0, the later frames in chunks of 4 stacked on a leading axis or None), patchified."""
  x = patchify(video, patch)
  b, t = x.shape[:2]
  if t == 1:
    return x, None
  return x[:, :1], jnp.moveaxis(x[:, 1:].reshape((b, (t - 1) // 4, 4) + x.shape[2:]), 1, 0)


def posterior_moments(graphdef, state, video):
  """Un-normalised posterior (mean, log-variance), each (B, 1+k, H/s, W/s, z_dim), in float32:
  what training the VAE needs (encode returns the normalised mean only). Differentiable."""
  model = nnx.merge(graphdef, state)
  first, rest = _chunks(video.astype(model.dtype), model.config.patch)
  moments = _stream(graphdef, state, "moments_chunk", first, rest).astype(jnp.float32)
  return moments[..., :model.z_dim], moments[..., model.z_dim:]


@functools.partial(jax.jit, static_argnums=0)
def _encode(graphdef, state, video):
  model = nnx.merge(graphdef, state)
  cfg = model.config
  first, rest = _chunks(video.astype(model.dtype), cfg.patch)  # Wan's chunks: 1, then 4 frames
  mu = _stream(graphdef, state, "encode_chunk", first, rest)
  mean, std = _stats(cfg)
  return ((mu.astype(jnp.float32) - mean) / std).astype(model.dtype)


@functools.partial(jax.jit, static_argnums=0)
def _decode(graphdef, state, latents):
  model = nnx.merge(graphdef, state)
  cfg = model.config
  mean, std = _stats(cfg)
  z = (latents.astype(jnp.float32) * std + mean).astype(model.dtype)
  rest = jnp.moveaxis(z[:, 1:, None], 1, 0) if z.shape[1] > 1 else None  # one frame per chunk
  out = _stream(graphdef, state, "decode_chunk", z[:, :1], rest)
  return jnp.clip(unpatchify(out, cfg.patch), -1.0, 1.0)


# ----------------------------------------------------------------------------- build / save / load

def init_vae(config: dict | VAEConfig, seed: int = 0, dtype=jnp.float32,
             param_dtype=jnp.float32) -> WanVAE:
  """A randomly initialised VAE, e.g. for demos and benchmarks; no torch needed.

  torch's default init (uniform +-1/sqrt(fan_in) for conv kernels and biases, unit norm gains),
  drawn with numpy on the host: initialising through jax.random would compile one XLA program
  per distinct parameter shape (seconds each on a small CPU) for no benefit.
  """
  rng = np.random.default_rng(seed)
  model = nnx.eval_shape(lambda: WanVAE(config, rngs=None, dtype=dtype, param_dtype=param_dtype))
  graphdef, state = nnx.split(model)

  def fill(node):
    out = {}
    if "kernel" in node:
      bound = 1.0 / np.sqrt(np.prod(node["kernel"].shape[:-1]))
    for k, v in node.items():
      if isinstance(v, dict):
        out[k] = fill(v)
      elif k == "gamma":
        out[k] = jnp.ones(v.shape, param_dtype)
      else:  # kernel or bias of the same layer
        out[k] = jnp.asarray(rng.uniform(-bound, bound, v.shape).astype(np.float32), param_dtype)
    return out

  nnx.replace_by_pure_dict(state, fill(nnx.to_pure_dict(state)))
  return nnx.merge(graphdef, state)


def save_vae(model: WanVAE, out: str, dtype: str = "float32") -> dict:
  """Writes `model` in our checkpoint format (OUT/{params/, config.json}); returns the config."""
  from wildactor_jax.models.checkpoint_io import write_checkpoint
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  config = model.config.to_dict()

  def build(tree):
    def put(path, leaf):
      tree.put(tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path),
               np.asarray(jnp.asarray(leaf, jnp.float32)))
    jax.tree_util.tree_map_with_path(put, params)
    return config

  write_checkpoint(out, build, dtype)
  return config


def abstract_params(config: dict | VAEConfig, dtype, sharding=None) -> dict:
  """The checkpoint's parameter tree as ShapeDtypeStructs (what the converter must write)."""
  model = nnx.eval_shape(lambda: WanVAE(config, rngs=None, param_dtype=dtype))
  shapes = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype, sharding=sharding), shapes)


def load_vae(path: str, dtype=jnp.float32, sharding=None) -> WanVAE:
  """A converted checkpoint -> WanVAE computing in `dtype` (parameters are restored in `dtype`).

  The VAE is small (~0.7 GB in float32), so it is restored replicated: on the default device, or
  with `sharding` (e.g. a replicated NamedSharding over a mesh).
  """
  from wildactor_jax.models.checkpoint_io import read_config, read_params
  cfg = VAEConfig.from_dict(read_config(path))
  if sharding is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  params = read_params(path, abstract_params(cfg, dtype, sharding))
  model = nnx.eval_shape(lambda: WanVAE(cfg, rngs=None, dtype=dtype, param_dtype=dtype))
  graphdef, state = nnx.split(model)
  nnx.replace_by_pure_dict(state, params)
  return nnx.merge(graphdef, state)
