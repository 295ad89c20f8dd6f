"""Thin Flax NNX layers shared by the DiT, the VAE and the text encoder.

Every parameter carries logical axis names in its `out_sharding` metadata; the mapping from those
names to mesh axes lives in the config (see `wildactor_jax.sharding`). The math stays in jnp:
these modules only hold parameters and cast dtypes.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Axes = tuple[str | None, ...]


def param(rngs: nnx.Rngs | None, init, shape: Sequence[int], dtype, axes: Axes, cls=nnx.Param):
  """A parameter with logical axis names. rngs=None gives zeros (for shapes/conversion)."""
  if len(axes) != len(shape):
    raise ValueError(f"logical axes {axes} do not match parameter shape {tuple(shape)}")
  value = jnp.zeros(shape, dtype) if rngs is None else init(rngs.params(), tuple(shape), dtype)
  # Shardings are resolved from the config rules when a model is placed on a mesh, not eagerly.
  return cls(value, out_sharding=tuple(axes), eager_sharding=False)


def torch_linear_init(fan_in: int):
  """PyTorch's default Linear init (uniform +-1/sqrt(fan_in)), so random models look like torch's."""
  bound = 1.0 / (fan_in ** 0.5)

  def init(key, shape, dtype):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class Linear(nnx.Module):
  """y = x @ kernel + bias, kernel stored (in, out) with logical axes."""

  def __init__(self, in_features: int, out_features: int, *, axes: Axes, rngs: nnx.Rngs | None,
               use_bias: bool = True, dtype=jnp.float32, param_dtype=jnp.float32):
    init = torch_linear_init(in_features)
    self.kernel = param(rngs, init, (in_features, out_features), param_dtype, axes)
    self.bias = param(rngs, init, (out_features,), param_dtype, (axes[1],)) if use_bias else None
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


def rms_norm(x: jax.Array, weight: jax.Array | None, eps: float) -> jax.Array:
  """RMSNorm computed in float32, cast back to the input dtype."""
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
  if weight is not None:
    y = y * weight.astype(jnp.float32)
  return y.astype(x.dtype)


def layer_norm(x: jax.Array, weight: jax.Array | None, bias: jax.Array | None, eps: float) -> jax.Array:
  """LayerNorm computed in float32 (as diffusers' FP32LayerNorm), cast back to the input dtype."""
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
  y = (x32 - mean) * jax.lax.rsqrt(var + eps)
  if weight is not None:
    y = y * weight.astype(jnp.float32)
  if bias is not None:
    y = y + bias.astype(jnp.float32)
  return y.astype(x.dtype)


class RMSNorm(nnx.Module):

  def __init__(self, dim: int, *, axis_name: str, eps: float, rngs: nnx.Rngs | None,
               param_dtype=jnp.float32):
    self.weight = param(rngs, lambda k, s, d: jnp.ones(s, d), (dim,), param_dtype, (axis_name,))
    self.eps = eps

  def __call__(self, x):
    return rms_norm(x, self.weight[...], self.eps)


class LayerNorm(nnx.Module):
  """Affine LayerNorm (weight and bias)."""

  def __init__(self, dim: int, *, axis_name: str, eps: float, rngs: nnx.Rngs | None,
               param_dtype=jnp.float32):
    ones = lambda k, s, d: jnp.ones(s, d)
    zeros = lambda k, s, d: jnp.zeros(s, d)
    self.weight = param(rngs, ones, (dim,), param_dtype, (axis_name,))
    self.bias = param(rngs, zeros, (dim,), param_dtype, (axis_name,))
    self.eps = eps

  def __call__(self, x):
    return layer_norm(x, self.weight[...], self.bias[...], self.eps)
