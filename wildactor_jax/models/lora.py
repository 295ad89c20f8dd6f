"""Reference-only LoRA adapters: delta(x) = scale * (x @ down) @ up, `up` zero-initialised.

The adapter weights are `nnx.LoRAParam`, so training differentiates and optimises exactly them
(`nnx.DiffState(0, nnx.LoRAParam)`), and the frozen backbone never enters the optimiser.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from wildactor_jax.models.layers import param, torch_linear_init


class LoRA(nnx.Module):

  def __init__(self, in_features: int, out_features: int, rank: int, scale: float, *,
               rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    self.down = param(rngs, torch_linear_init(in_features), (in_features, rank), param_dtype,
                      ("embed", "lora_rank"), cls=nnx.LoRAParam)
    zeros = lambda key, shape, dt: jnp.zeros(shape, dt)
    self.up = param(rngs, zeros, (rank, out_features), param_dtype, ("lora_rank", "qkv"),
                    cls=nnx.LoRAParam)
    self.scale = scale
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    h = jnp.dot(x.astype(self.dtype), self.down[...].astype(self.dtype))
    return self.scale * jnp.dot(h, self.up[...].astype(self.dtype))
