"""The Wan2.x video DiT (diffusers `WanTransformer3DModel` semantics) in Flax NNX, channels-last,
with WildActor's reference stream.

    model = load_backbone(path)                          # converted checkpoint
    velocity = model(latents, timesteps, text_embeds)    # (B,T,H,W,C), (B,)|(B,T)|(B,L), (B,S,Dt)
    velocity = model(latents, t, text, references=refs)  # WildActor (docs/method.md s.1)

A model built for a mesh (`WanTransformer(cfg, rngs=, mesh=, rules=)`, as `loading.create_model`
and the train state do) runs every call inside `activation_sharding(mesh, rules)`: activations
are pinned and the attention kernel runs under shard_map on that mesh whoever calls it. The mesh
is a static attribute, part of the model's graph definition, so jit caches key on it: a trace
never depends on the caller's context. A model without a mesh follows the caller's context.

Layers are created stacked (`nnx.vmap`) and run under one `jax.lax.scan`, so a 30-40 layer model
compiles one block. Timesteps are in diffusers' 0..1000 scale: (B,) one per sample, (B, T) one per
latent frame, or (B, T*H*W/4) one per token as Wan2.2-TI2V passes them.
"""
from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from wildactor_jax.models import irope, rope as rope_lib
from wildactor_jax.models.attention import attention, attention_options
from wildactor_jax.models.block import HIDDEN, Stream, WanBlock
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.layers import Linear, layer_norm, param
from wildactor_jax.sharding import activation_sharding, constrain

REMAT = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class References(NamedTuple):
  """Reference images as latents: (B, R, h, w, C) one latent frame each; types (B, R) int
  (0 face, 1 body / three-view sheet); mask (B, R) bool, True for real references."""
  latents: jax.Array
  types: jax.Array
  mask: jax.Array


class ReferenceCache(NamedTuple):
  """Every layer's reference keys/values (L, B, Lr, N, Dh), valid references first."""
  k: jax.Array
  v: jax.Array
  lengths: jax.Array  # (B,) valid reference tokens


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding [cos, sin] (diffusers Timesteps, flip_sin_to_cos=True, shift 0)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[..., None] * freqs
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def patchify(x: jax.Array, patch: tuple[int, int, int]) -> jax.Array:
  """(B, T, H, W, C) -> (B, T/pt * H/ph * W/pw, pt*ph*pw*C), raster order (frame, row, col)."""
  b, t, h, w, c = x.shape
  pt, ph, pw = patch
  if t % pt or h % ph or w % pw:
    raise ValueError(f"latents (T, H, W) = {(t, h, w)} must be divisible by the patch {patch}")
  x = x.reshape(b, t // pt, pt, h // ph, ph, w // pw, pw, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, (t // pt) * (h // ph) * (w // pw), pt * ph * pw * c)


def unpatchify(x: jax.Array, grid: tuple[int, int, int], patch, channels: int) -> jax.Array:
  b = x.shape[0]
  (t, h, w), (pt, ph, pw) = grid, patch
  x = x.reshape(b, t, h, w, pt, ph, pw, channels).transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, t * pt, h * ph, w * pw, channels)


class Mlp(nnx.Module):
  """linear_1 -> activation -> linear_2 (the time and text embedders)."""

  def __init__(self, din: int, dout: int, act, *, rngs, dtype, param_dtype):
    self.linear_1 = Linear(din, dout, axes=(None, "embed"), rngs=rngs, dtype=dtype,
                           param_dtype=param_dtype)
    self.linear_2 = Linear(dout, dout, axes=(None, "embed"), rngs=rngs, dtype=dtype,
                           param_dtype=param_dtype)
    self.act = act

  def __call__(self, x):
    return self.linear_2(self.act(self.linear_1(x)))


def hashable_rules(rules) -> tuple:
  """Logical axis rules as nested tuples (a config's lists are not hashable)."""
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules)


class WanTransformer(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, mesh=None, rules=None):
    self.cfg = cfg
    self.mesh = mesh  # static: see the module docstring
    self.rules = None if mesh is None else hashable_rules(rules or ())
    kw = dict(rngs=rngs, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype)
    d, patch_in = cfg.dim, math.prod(cfg.patch_size)
    # The Conv3d patch embedding as a Linear over (pt, ph, pw, C)-ordered patches.
    self.patch_embedding = Linear(patch_in * cfg.in_channels, d, axes=(None, "embed"), **kw)
    self.time_embedder = Mlp(cfg.freq_dim, d, jax.nn.silu, **kw)
    self.time_proj = Linear(d, 6 * d, axes=("embed", "mlp"), **kw)
    self.text_embedder = Mlp(cfg.text_dim, d, lambda x: jax.nn.gelu(x, approximate=True), **kw)

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(r):
      return WanBlock(cfg, rngs=r)

    self.blocks = make_blocks(rngs)
    self.proj_out = Linear(d, patch_in * cfg.out_channels, axes=("embed", None), **kw)
    normal = lambda key, shape, dt: jax.random.normal(key, shape, dt) / d ** 0.5
    self.scale_shift_table = param(rngs, normal, (1, 2, d), jnp.float32, (None, None, "embed"))

  def on_mesh(self):
    """The context every call runs in: the model's mesh and rules, or (none) the caller's."""
    if self.mesh is None:
      return contextlib.nullcontext()
    return activation_sharding(self.mesh, self.rules)

  # ---- conditioning -------------------------------------------------------------------------
  def time_conditioning(self, timesteps: jax.Array):
    """timesteps (B, G) -> temb (B, G, D) and block modulation (B, G, 6, D), float32."""
    emb = timestep_embedding(timesteps, self.cfg.freq_dim)
    temb = self.time_embedder(emb).astype(jnp.float32)
    mod = self.time_proj(jax.nn.silu(temb)).astype(jnp.float32)
    return temb, mod.reshape(*mod.shape[:-1], 6, self.cfg.dim)

  def _grouped_timesteps(self, timesteps, batch: int, grid) -> jax.Array:
    t, h, w = grid
    ts = jnp.asarray(timesteps)
    if ts.ndim == 1:
      ts = ts[:, None]
    elif ts.ndim != 2 or ts.shape[1] not in (t, t * h * w):
      raise ValueError(f"timesteps shape {ts.shape}: expected (B,), (B, {t}) per latent frame "
                       f"or (B, {t * h * w}) per token")
    return jnp.broadcast_to(ts, (batch, ts.shape[1]))

  def _reference_stream(self, refs: References, video_grid):
    """Embeds references (valid first) -> (Stream, valid token lengths (B,))."""
    cfg = self.cfg
    order = irope.valid_first_order(refs.mask)
    take = lambda a: jnp.take_along_axis(a, order.reshape(order.shape + (1,) * (a.ndim - 2)), 1)
    latents, types, mask = take(refs.latents), take(refs.types), take(refs.mask)
    b, r, hl, wl, c = latents.shape
    tokens = patchify(latents.reshape(b * r, 1, hl, wl, c), cfg.patch_size)  # (B*R, n, p)
    n = tokens.shape[1]
    x = self.patch_embedding(tokens.reshape(b, r * n, -1))
    pos = irope.reference_positions(
        types, mask, video_grid, (hl // cfg.patch_size[1], wl // cfg.patch_size[2]),
        irope=cfg.irope, face_offset=cfg.face_temporal_offset,
        body_offset=cfg.body_temporal_offset, stride=cfg.reference_frame_stride,
        max_len=cfg.rope_max_seq_len)
    cos, sin = rope_lib.rope_cos_sin(pos, cfg.head_dim, cfg.rope_max_seq_len, cfg.rope_theta)
    _, mod = self.time_conditioning(jnp.zeros((b, 1), jnp.float32))  # references are clean: t=0
    lengths = jnp.sum(mask, axis=1).astype(jnp.int32) * n
    return Stream(constrain(x, HIDDEN), mod, cos, sin), lengths

  # ---- the layer stack ----------------------------------------------------------------------
  def _scan_blocks(self, body, carry, xs):
    graphdef, state = nnx.split(self.blocks)

    def step(c, layer):
      layer_state, extra = layer
      return body(nnx.merge(graphdef, layer_state), c, extra)

    if self.cfg.remat != "none":
      step = jax.checkpoint(step, policy=REMAT[self.cfg.remat], prevent_cse=False)
    return jax.lax.scan(step, carry, (state, xs))

  def encode_references(self, references: References, video_grid: tuple[int, int, int]):
    """Every layer's reference K/V, computed once per sample (they depend on neither the video
    nor t under AIPA) and reused at every denoising step via `reference_cache=`."""
    if not self.cfg.aipa:
      raise ValueError("reference caching needs model.aipa=True: without AIPA references read "
                       "the video, so their keys/values change every step")
    with self.on_mesh():
      return self._encode_references(references, video_grid)

  def _encode_references(self, references: References, video_grid):
    ref, lengths = self._reference_stream(references, video_grid)

    def body(block, x, _):
      s = ref._replace(x=x)
      q, k, v = block.reference_qkv(s)
      out = attention(q, k, v, jnp.maximum(lengths, 1), **attention_options(self.cfg))
      return block.reference_finish(s, out), (k, v)

    _, (k, v) = self._scan_blocks(body, ref.x, None)
    return ReferenceCache(k, v, lengths)

  def __call__(self, latents: jax.Array, timesteps: jax.Array, text_embeds: jax.Array, *,
               text_lengths: jax.Array | None = None, references: References | None = None,
               reference_cache: ReferenceCache | None = None, return_reference_states=False,
               video_positions: jax.Array | None = None):
    """video_positions (B, N, 3): the video tokens' RoPE positions (default: the grid's own,
    `rope.video_positions`); pre-training may randomise them (`rope.jittered_video_positions`)."""
    with self.on_mesh():
      return self._forward(latents, timesteps, text_embeds, text_lengths=text_lengths,
                           references=references, reference_cache=reference_cache,
                           return_reference_states=return_reference_states,
                           video_positions=video_positions)

  def _forward(self, latents, timesteps, text_embeds, *, text_lengths, references,
               reference_cache, return_reference_states, video_positions):
    cfg = self.cfg
    if latents.ndim != 5 or latents.shape[-1] != cfg.in_channels:
      raise ValueError(f"latents shape {latents.shape}: expected (B, T, H, W, {cfg.in_channels})")
    if references is not None and reference_cache is not None:
      raise ValueError("pass references or reference_cache, not both")
    b, t, h, w, _ = latents.shape
    grid = (t // cfg.patch_size[0], h // cfg.patch_size[1], w // cfg.patch_size[2])
    x = constrain(self.patch_embedding(patchify(latents, cfg.patch_size)), HIDDEN)
    rope_lib.check_positions_fit(tuple(g - 1 for g in grid), cfg.rope_max_seq_len, "video")
    pos = jnp.asarray(rope_lib.video_positions(*grid))[None]
    if video_positions is not None:
      if video_positions.shape != (b, pos.shape[1], 3):
        raise ValueError(f"video_positions {video_positions.shape}: expected ({b}, {pos.shape[1]}, 3)")
      pos = video_positions
    cos, sin = rope_lib.rope_cos_sin(pos, cfg.head_dim, cfg.rope_max_seq_len, cfg.rope_theta)
    temb, mod = self.time_conditioning(self._grouped_timesteps(timesteps, b, grid))
    video = Stream(x, mod, cos, sin)
    context = self.text_embedder(text_embeds)

    ref, ref_lengths = (None, None)
    if references is not None:
      ref, ref_lengths = self._reference_stream(references, grid)
    elif reference_cache is not None:
      ref_lengths = reference_cache.lengths

    def body(block, carry, layer_kv):
      vx, rx = carry
      r = None if ref is None else ref._replace(x=rx)
      vx, rx, _ = block(video._replace(x=vx), context, text_lengths, r, ref_lengths, layer_kv)
      return (vx, rx), (rx if return_reference_states else None)

    xs = None if reference_cache is None else (reference_cache.k, reference_cache.v)
    (x, _), ref_states = self._scan_blocks(body, (x, None if ref is None else ref.x), xs)

    # Output head: its own (shift, scale) modulation from temb (B, G, D), per token group.
    g = temb.shape[1]
    shift, scale = [self.scale_shift_table[...][None, :, i] + temb for i in range(2)]
    y = layer_norm(x.reshape(b, g, -1, cfg.dim).astype(jnp.float32), None, None, cfg.eps)
    y = (y * (1 + scale[:, :, None]) + shift[:, :, None]).reshape(x.shape).astype(x.dtype)
    out = unpatchify(self.proj_out(y), grid, cfg.patch_size, cfg.out_channels)
    return (out, ref_states) if return_reference_states else out
