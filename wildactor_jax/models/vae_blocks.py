"""Building blocks of the Wan VAE (2.1 and 2.2), channels-last, with an explicit causal cache.

Wan's VAE is causal in time: every 3-tap temporal convolution sees only current and past frames,
and long clips are processed in chunks (encode: frame 0 alone, then 4 frames at a time; decode: one
latent frame at a time) while each causal layer carries the last frames of its input across
chunks. In PyTorch that cache is a mutable list indexed by a running counter. Here it is a plain
list of arrays (a pytree) threaded through one chunk step by `Stream`: layers read their previous
frames and append their new ones in a fixed call order, so the step is a pure function
`(params, cache, chunk) -> (cache', out)` that jit/scan can carry.

Equivalences with diffusers' `AutoencoderKLWan` that the code relies on (checked by the tests):
- a causal conv's missing past is zeros, so an all-zero 2-frame cache on the first chunk is the
  same as Wan's "no cache yet" zero padding;
- `downsample3d` skips its temporal conv on the first chunk (frame 0 is kept as is) and afterwards
  prepends the last frame of the previous chunk;
- `upsample3d` skips its temporal conv on the first chunk and only then starts a zero cache (Wan's
  "Rep" marker), so the first latent frame decodes to one frame and later ones to four.

Layouts: video/activations (B, T, H, W, C); conv kernels (kt, kh, kw, in, out) and (kh, kw, in,
out); 1x1 convolutions are `Linear` layers with kernels (in, out).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from wildactor_jax.models.layers import Linear, param, rms_norm, torch_linear_init

CONV_AXES = (None, None, None, "conv_in", "conv_out")
CONV2D_AXES = (None, None, "conv_in", "conv_out")
CACHE_T = 2  # frames a 3-tap causal conv keeps from the previous chunk


class Stream:
  """The causal cache of one chunk step: read old entries and collect new ones in call order.

  `cache=None` means "first chunk": every layer starts from zeros (or, for the resamplers, from its
  own first-chunk rule). The new list has the same structure and shapes on every later chunk, which
  is what lets `lax.scan` carry it.
  """

  def __init__(self, cache: list | None):
    self._cache = cache
    self.new: list[jax.Array] = []

  def prev(self, x: jax.Array, frames: int) -> jax.Array:
    i = len(self.new)
    if self._cache is None:
      return jnp.zeros((x.shape[0], frames) + x.shape[2:], x.dtype)
    old = self._cache[i]
    if old.shape[1:] != (frames,) + x.shape[2:]:
      raise ValueError(f"causal cache entry {i} has shape {old.shape}, expected {frames} frames "
                       f"of {x.shape[2:]} (was the cache made for another input size?)")
    return old.astype(x.dtype)

  def push(self, frames: jax.Array) -> None:
    self.new.append(frames)


def conv_init(fan_in: int):
  return torch_linear_init(fan_in)  # torch's default conv init has the same bound 1/sqrt(fan_in)


class CausalConv3d(nnx.Module):
  """A 3D convolution, causal in time (the past comes from the stream cache), 'same' in space."""

  def __init__(self, in_dim: int, out_dim: int, kernel=(3, 3, 3), *, rngs, param_dtype,
               dtype=jnp.float32):
    kt, kh, kw = kernel
    fan_in = in_dim * kt * kh * kw
    self.kernel = param(rngs, conv_init(fan_in), (kt, kh, kw, in_dim, out_dim), param_dtype,
                        CONV_AXES)
    self.bias = param(rngs, conv_init(fan_in), (out_dim,), param_dtype, ("conv_out",))
    self.pad_h, self.pad_w = kh // 2, kw // 2
    self.dtype = dtype

  def conv(self, x: jax.Array, stride_t: int = 1) -> jax.Array:
    """The raw convolution: no temporal padding (callers prepend the cached past)."""
    k = self.kernel[...].astype(self.dtype)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), k, window_strides=(stride_t, 1, 1),
        padding=((0, 0), (self.pad_h, self.pad_h), (self.pad_w, self.pad_w)),
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    return y + self.bias[...].astype(self.dtype)

  def __call__(self, x: jax.Array, stream: Stream) -> jax.Array:
    past = self.kernel.shape[0] - 1
    if past == 0:
      return self.conv(x)
    xx = jnp.concatenate([stream.prev(x, past), x], axis=1)
    stream.push(xx[:, -past:])
    return self.conv(xx)


class Conv2d(nnx.Module):
  """A per-frame 2D convolution (the spatial part of Wan's resamplers)."""

  def __init__(self, in_dim: int, out_dim: int, *, stride: int, padding: int, rngs, param_dtype,
               dtype=jnp.float32):
    fan_in = in_dim * 9
    self.kernel = param(rngs, conv_init(fan_in), (3, 3, in_dim, out_dim), param_dtype, CONV2D_AXES)
    self.bias = param(rngs, conv_init(fan_in), (out_dim,), param_dtype, ("conv_out",))
    self.stride, self.padding = stride, padding
    self.dtype = dtype

  def __call__(self, x: jax.Array, padding=None) -> jax.Array:
    b, t, h, w, c = x.shape
    p = self.padding
    pad = ((p, p), (p, p)) if padding is None else padding
    y = jax.lax.conv_general_dilated(
        x.reshape(b * t, h, w, c).astype(self.dtype), self.kernel[...].astype(self.dtype),
        window_strides=(self.stride, self.stride), padding=pad,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = y + self.bias[...].astype(self.dtype)
    return y.reshape((b, t) + y.shape[1:])


class ChannelRMSNorm(nnx.Module):
  """Wan's RMS_norm: L2-normalise over channels, times sqrt(C) and a learned gain (no bias)."""

  def __init__(self, dim: int, *, rngs, param_dtype):
    self.gamma = param(rngs, lambda k, s, d: jnp.ones(s, d), (dim,), param_dtype, ("norm",))

  def __call__(self, x: jax.Array) -> jax.Array:
    # x / max(||x||, 1e-12) * sqrt(C) == x * rsqrt(mean(x^2)) up to the tiny epsilon.
    return rms_norm(x, self.gamma[...], 1e-12)


def one_by_one(in_dim: int, out_dim: int, *, rngs, param_dtype, dtype) -> Linear:
  """A 1x1(x1) convolution is a Linear over channels."""
  return Linear(in_dim, out_dim, axes=("conv_in", "conv_out"), rngs=rngs, dtype=dtype,
                param_dtype=param_dtype)


class ResidualBlock(nnx.Module):
  """norm-SiLU-conv-norm-SiLU-conv plus a (1x1 projected) shortcut. Dropout is inference-off."""

  def __init__(self, in_dim: int, out_dim: int, *, rngs, param_dtype, dtype=jnp.float32):
    kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
    self.norm1 = ChannelRMSNorm(in_dim, rngs=rngs, param_dtype=param_dtype)
    self.conv1 = CausalConv3d(in_dim, out_dim, **kw)
    self.norm2 = ChannelRMSNorm(out_dim, rngs=rngs, param_dtype=param_dtype)
    self.conv2 = CausalConv3d(out_dim, out_dim, **kw)
    self.conv_shortcut = one_by_one(in_dim, out_dim, **kw) if in_dim != out_dim else None

  def __call__(self, x: jax.Array, stream: Stream, first: bool = False) -> jax.Array:
    h = x if self.conv_shortcut is None else self.conv_shortcut(x)
    x = self.conv1(jax.nn.silu(self.norm1(x)), stream)
    x = self.conv2(jax.nn.silu(self.norm2(x)), stream)
    return x + h


class AttentionBlock(nnx.Module):
  """Single-head self-attention within each frame (over its H*W positions), residual."""

  def __init__(self, dim: int, *, rngs, param_dtype, dtype=jnp.float32):
    kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
    self.norm = ChannelRMSNorm(dim, rngs=rngs, param_dtype=param_dtype)
    self.to_qkv = one_by_one(dim, 3 * dim, **kw)
    self.proj = one_by_one(dim, dim, **kw)

  def __call__(self, x: jax.Array, stream: Stream | None = None, first: bool = False) -> jax.Array:
    b, t, h, w, c = x.shape
    qkv = self.to_qkv(self.norm(x)).reshape(b * t, h * w, 1, 3 * c)
    q, k, v = jnp.split(qkv, 3, axis=-1)
    y = jax.nn.dot_product_attention(q, k, v)  # (B*T, HW, 1, C); XLA/cuDNN picks the kernel
    return self.proj(y.reshape(b, t, h, w, c)) + x


class Resample(nnx.Module):
  """Spatial 2x up/down sampling per frame, plus (for the *3d modes) a causal 2x in time."""

  def __init__(self, dim: int, mode: str, out_dim: int | None = None, *, rngs, param_dtype,
               dtype=jnp.float32):
    kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
    self.mode = mode
    if mode.startswith("upsample"):
      self.resample = Conv2d(dim, out_dim or dim // 2, stride=1, padding=1, **kw)
      # 2*dim outputs = two output frames per input frame, interleaved below.
      self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), **kw) if mode == "upsample3d" else None
    elif mode.startswith("downsample"):
      self.resample = Conv2d(dim, dim, stride=2, padding=0, **kw)
      self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), **kw) if mode == "downsample3d" else None
    else:
      raise ValueError(f"resample mode {mode!r}: expected up/downsample2d/3d")

  def __call__(self, x: jax.Array, stream: Stream, first: bool = False) -> jax.Array:
    if self.mode == "upsample3d":
      if first:  # Wan decodes the first latent frame to ONE frame and starts the cache after it
        stream.push(jnp.zeros((x.shape[0], CACHE_T) + x.shape[2:], x.dtype))
      else:
        b, t, h, w, c = x.shape
        y = self.time_conv(x, stream).reshape(b, t, h, w, 2, c)
        x = jnp.moveaxis(y, 4, 2).reshape(b, 2 * t, h, w, c)
    if self.mode.startswith("upsample"):
      x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)  # nearest(-exact) at an integer scale
      return self.resample(x)
    x = self.resample(x, padding=((0, 1), (0, 1)))  # ZeroPad2d((0, 1, 0, 1)) then stride 2
    if self.mode == "downsample3d":
      if first:  # frame 0 passes through; its last frame seeds the cache
        stream.push(x[:, -1:])
      else:
        past = stream.prev(x, 1)
        stream.push(x[:, -1:])
        x = self.time_conv.conv(jnp.concatenate([past, x], axis=1), stride_t=2)
    return x


class MidBlock(nnx.Module):
  """resnet, attention, resnet."""

  def __init__(self, dim: int, *, rngs, param_dtype, dtype=jnp.float32):
    kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
    self.resnets = nnx.List([ResidualBlock(dim, dim, **kw), ResidualBlock(dim, dim, **kw)])
    self.attentions = nnx.List([AttentionBlock(dim, **kw)])

  def __call__(self, x: jax.Array, stream: Stream, first: bool = False) -> jax.Array:
    x = self.resnets[0](x, stream)
    x = self.attentions[0](x)
    return self.resnets[1](x, stream)


def avg_down(x: jax.Array, out_dim: int, factor_t: int, factor_s: int) -> jax.Array:
  """Wan2.2's parameter-free shortcut: space/time-to-channels, then mean over channel groups.

  The time axis is left-padded with zeros to a multiple of factor_t (so frame 0 of a chunk of one
  is averaged with a zero frame, as in Wan). Channel order matches torch's (C, ft, fs, fs) packing.
  """
  pad_t = (factor_t - x.shape[1] % factor_t) % factor_t
  if pad_t:
    x = jnp.pad(x, ((0, 0), (pad_t, 0), (0, 0), (0, 0), (0, 0)))
  b, t, h, w, c = x.shape
  ft, fs = factor_t, factor_s
  x = x.reshape(b, t // ft, ft, h // fs, fs, w // fs, fs, c)
  x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6)  # (b, t', h', w', c, ft, fs_h, fs_w)
  group = c * ft * fs * fs // out_dim
  x = x.reshape(b, t // ft, h // fs, w // fs, out_dim, group)
  return jnp.mean(x, axis=-1)


def dup_up(x: jax.Array, out_dim: int, factor_t: int, factor_s: int, first: bool) -> jax.Array:
  """Wan2.2's parameter-free shortcut: repeat channels, then channels-to-space/time.

  On the first chunk the temporal upsampler emits one frame, so the first factor_t - 1 frames are
  dropped here too.
  """
  b, t, h, w, c = x.shape
  ft, fs = factor_t, factor_s
  x = jnp.repeat(x, out_dim * ft * fs * fs // c, axis=-1)
  x = x.reshape(b, t, h, w, out_dim, ft, fs, fs)
  x = x.transpose(0, 1, 5, 2, 6, 3, 7, 4)  # (b, t, ft, h, fs_h, w, fs_w, out)
  x = x.reshape(b, t * ft, h * fs, w * fs, out_dim)
  return x[:, ft - 1:] if first else x


class ResidualDownBlock(nnx.Module):
  """Wan2.2 encoder stage: resnets (+ downsampler) plus an avg_down shortcut around them."""

  def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, *, temporal: bool,
               down: bool, rngs, param_dtype, dtype=jnp.float32):
    kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
    if (in_dim * (2 if temporal else 1) * (4 if down else 1)) % out_dim:
      raise ValueError(f"down block {in_dim}->{out_dim}: channels do not divide the shortcut")
    self.resnets = nnx.List([ResidualBlock(in_dim if i == 0 else out_dim, out_dim, **kw)
                             for i in range(num_res_blocks)])
    mode = "downsample3d" if temporal else "downsample2d"
    self.downsampler = Resample(out_dim, mode, **kw) if down else None
    self.out_dim = out_dim
    self.factor_t, self.factor_s = (2 if temporal else 1), (2 if down else 1)

  def __call__(self, x: jax.Array, stream: Stream, first: bool = False) -> jax.Array:
    shortcut = avg_down(x, self.out_dim, self.factor_t, self.factor_s)
    for resnet in self.resnets:
      x = resnet(x, stream)
    if self.downsampler is not None:
      x = self.downsampler(x, stream, first)
    return x + shortcut


class UpBlock(nnx.Module):
  """Decoder stage: num_res_blocks + 1 resnets, then an optional upsampler.

  Wan2.1 (`residual=False`): the upsampler halves the channels (hence the next stage's in_dim is
  halved by the caller). Wan2.2 (`residual=True`): the upsampler keeps them and a dup_up shortcut
  wraps the whole stage.
  """

  def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, *, mode: str | None,
               residual: bool, rngs, param_dtype, dtype=jnp.float32):
    kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
    self.resnets = nnx.List([ResidualBlock(in_dim if i == 0 else out_dim, out_dim, **kw)
                             for i in range(num_res_blocks + 1)])
    self.residual = residual
    self.in_dim, self.out_dim = in_dim, out_dim
    self.factor_t = 2 if mode == "upsample3d" else 1
    if residual:  # diffusers: WanResidualUpBlock.upsampler
      self.upsampler = Resample(out_dim, mode, out_dim, **kw) if mode else None
    else:  # diffusers: WanUpBlock.upsamplers[0]
      self.upsamplers = nnx.List([Resample(out_dim, mode, **kw)] if mode else [])

  def __call__(self, x: jax.Array, stream: Stream, first: bool = False) -> jax.Array:
    x_in = x
    for resnet in self.resnets:
      x = resnet(x, stream)
    if self.residual:
      if self.upsampler is not None:
        x = self.upsampler(x, stream, first)
        x = x + dup_up(x_in, self.out_dim, self.factor_t, 2, first)
      return x
    for up in self.upsamplers:
      x = up(x, stream, first)
    return x
