"""Low-rank adapters: delta(x) = scale * (x @ down) @ up, `up` zero-initialised, in named sets.

A model holds two adapter sets, told apart by the tokens they adapt and by their variable type:
- the *reference* set (`WanAttention.lora`, `nnx.LoRAParam`): WildActor's identity LoRA on the
  reference tokens' q/k/v (docs/method.md s.1; `model.lora_targets` may add o, and ffn_in /
  ffn_out, which live on the block as `WanBlock.ref_ffn_lora`);
- the *video* set (`WanBlock.video_lora`, `VideoLoRAParam`): an adapter on the video tokens'
  projections, e.g. a few-step "step LoRA" (wildactor_jax/distill). Reference tokens never go
  through it, so the reference K/V cache is the same with or without it, and with `up` zero the
  model is exactly the one without it.
Training differentiates one set by its type (`nnx.DiffState(0, nnx.LoRAParam)` for the identity
LoRA, `VideoLoRAParam` for a step LoRA); the frozen backbone never enters an optimiser.
"""
from __future__ import annotations

from typing import Iterable

import jax
import jax.numpy as jnp
from flax import nnx

from wildactor_jax.models.layers import param, torch_linear_init


class VideoLoRAParam(nnx.LoRAParam):
  """A weight of the video-token adapter set (a subtype of LoRAParam: never frozen backbone)."""


class LoRA(nnx.Module):

  def __init__(self, in_features: int, out_features: int, rank: int, scale: float, *,
               rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
               axes: tuple[str, str] = ("embed", "qkv"), kind=nnx.LoRAParam):
    self.down = param(rngs, torch_linear_init(in_features), (in_features, rank), param_dtype,
                      (axes[0], "lora_rank"), cls=kind)
    zeros = lambda key, shape, dt: jnp.zeros(shape, dt)
    self.up = param(rngs, zeros, (rank, out_features), param_dtype, ("lora_rank", axes[1]),
                    cls=kind)
    self.scale = scale
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    h = jnp.dot(x.astype(self.dtype), self.down[...].astype(self.dtype))
    return self.scale * jnp.dot(h, self.up[...].astype(self.dtype))


def adapted(y: jax.Array, x: jax.Array, target: str, adapters: Iterable) -> jax.Array:
  """y (a frozen projection of x) plus the `target` delta of every adapter set given (a set is
  an nnx.Dict target -> LoRA, or None); a set without that target adds nothing."""
  for a in adapters:
    if a is not None and target in a:
      y = y + a[target](x).astype(y.dtype)
  return y
