"""One Wan DiT block, with the WildActor reference stream (AIPA) when references are present.

Per block (diffusers `WanTransformerBlock` order): modulated LayerNorm -> self-attention (QK
RMSNorm across heads, 3D RoPE) -> gated residual; affine LayerNorm -> text cross-attention ->
residual; modulated LayerNorm -> GELU(tanh) FFN -> gated residual.

Reference tokens (timestep 0, their own modulation) share every frozen weight; their q/k/v add
the identity LoRA's deltas (and their o / FFN too where model.lora_targets names them); they skip
text cross-attention. The video tokens' own adapter set (`video_lora`, models/lora.py; e.g. a
few-step step LoRA) adapts their self-attention and FFN projections only, so references never
see it. Under AIPA their queries see only reference
keys while video queries see [video ; references]. Valid references come first, so padding is a
key length, never a dense mask.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from wildactor_jax.models import rope as rope_lib
from wildactor_jax.models.attention import aipa_attention, attention, attention_options
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.layers import LayerNorm, Linear, RMSNorm, layer_norm, param
from wildactor_jax.models.lora import LoRA, VideoLoRAParam, adapted
from wildactor_jax.sharding import constrain

HIDDEN = ("batch", "length", None)
HEADS = ("batch", "length", "heads", None)


class Stream(NamedTuple):
  """A token stream entering a block.

  x: (B, L, D) hidden states; mod: (B, G, 6, D) float32 timestep modulation shared by groups of
  L // G consecutive tokens (G = 1 global timestep, T per frame, L per token); cos/sin:
  (B or 1, L, head_dim // 2) rotary tables.
  """
  x: jax.Array
  mod: jax.Array
  cos: jax.Array
  sin: jax.Array


def grouped(x: jax.Array, groups: int) -> jax.Array:
  b, l, d = x.shape
  return x.reshape(b, groups, l // groups, d)


def modulated_norm(x: jax.Array, shift: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
  """LayerNorm(x) * (1 + scale) + shift in float32; shift/scale (B, G, D) per token group."""
  g = shift.shape[1]
  y = layer_norm(grouped(x, g).astype(jnp.float32), None, None, eps)
  y = y * (1.0 + scale[:, :, None, :]) + shift[:, :, None, :]
  return y.reshape(x.shape).astype(x.dtype)


def gated_residual(x: jax.Array, update: jax.Array, gate: jax.Array) -> jax.Array:
  """x + update * gate, accumulated in float32 as diffusers does."""
  g = gate.shape[1]
  y = grouped(x, g).astype(jnp.float32) + grouped(update, g).astype(jnp.float32) * gate[:, :, None]
  return y.reshape(x.shape).astype(x.dtype)


class WanAttention(nnx.Module):
  """q/k/v/out projections with RMSNorm on q and k across all heads; optional LoRA deltas."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, lora: bool):
    kw = dict(rngs=rngs, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype)
    d = cfg.dim
    self.to_q = Linear(d, d, axes=("embed", "qkv"), **kw)
    self.to_k = Linear(d, d, axes=("embed", "qkv"), **kw)
    self.to_v = Linear(d, d, axes=("embed", "qkv"), **kw)
    self.to_out = Linear(d, d, axes=("qkv", "embed"), **kw)
    self.norm_q = RMSNorm(d, axis_name="qkv", eps=cfg.eps, rngs=rngs, param_dtype=cfg.jnp_param_dtype)
    self.norm_k = RMSNorm(d, axis_name="qkv", eps=cfg.eps, rngs=rngs, param_dtype=cfg.jnp_param_dtype)
    self.num_heads = cfg.num_heads
    # The reference set's attention targets; its FFN targets live on the block (WanBlock).
    targets = [t for t in cfg.lora_targets if t in ATTENTION_TARGETS]
    self.lora = adapter_set(cfg, targets, cfg.lora_rank, cfg.lora_scale, nnx.LoRAParam,
                            rngs) if lora else None

  def project(self, name: str, x: jax.Array, adapters=()) -> jax.Array:
    """A projection (q, k, v or o) of x plus the given adapter sets' deltas for it."""
    linear = self.to_out if name == "o" else getattr(self, f"to_{name}")
    return adapted(linear(x), x, name, adapters)

  def adapter_sets(self, use_lora: bool, adapters) -> tuple:
    """The adapter sets a call applies: the reference set when use_lora, then `adapters`."""
    return ((self.lora,) if use_lora else ()) + tuple(adapters)

  def heads(self, y: jax.Array) -> jax.Array:
    return constrain(y.reshape(*y.shape[:-1], self.num_heads, -1), HEADS)

  def qkv(self, x, kv_input, cos=None, sin=None, use_lora: bool = False, adapters=()):
    """(B, L, N, Dh) queries, keys, values; RoPE when cos/sin are given (self-attention).
    use_lora: add the reference (identity) LoRA; adapters: further adapter sets (models/lora.py)."""
    sets = self.adapter_sets(use_lora, adapters)
    q = self.heads(self.norm_q(self.project("q", x, sets)))
    k = self.heads(self.norm_k(self.project("k", kv_input, sets)))
    v = self.heads(self.project("v", kv_input, sets))
    if cos is not None:
      q, k = rope_lib.apply_rope(q, cos, sin), rope_lib.apply_rope(k, cos, sin)
    return q, k, v

  def out(self, o: jax.Array, use_lora: bool, adapters=()) -> jax.Array:
    o = o.reshape(*o.shape[:2], -1)
    return self.project("o", o, self.adapter_sets(use_lora, adapters))


ATTENTION_TARGETS = ("q", "k", "v", "o")
FFN_TARGETS = ("ffn_in", "ffn_out")


def adapter_set(cfg: ModelConfig, targets, rank: int, scale: float, kind,
                rngs: nnx.Rngs) -> nnx.Dict:
  """An adapter set: a LoRA of variable type `kind` per target (self-attention q, k, v, o and
  the FFN's ffn_in, ffn_out), shaped and named like the projection it adapts."""
  d, f = cfg.dim, cfg.ffn_dim
  shapes = {"q": (d, d, ("embed", "qkv")), "k": (d, d, ("embed", "qkv")),
            "v": (d, d, ("embed", "qkv")), "o": (d, d, ("qkv", "embed")),
            "ffn_in": (d, f, ("embed", "mlp")), "ffn_out": (f, d, ("mlp", "embed"))}
  return nnx.Dict({t: LoRA(shapes[t][0], shapes[t][1], rank, scale, rngs=rngs,
                           dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
                           axes=shapes[t][2], kind=kind)
                   for t in targets})


def video_adapters(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Dict:
  """The video tokens' adapter set (VideoLoRAParam) per cfg.video_lora_targets."""
  return adapter_set(cfg, cfg.video_lora_targets, cfg.video_lora_rank, cfg.video_lora_scale,
                     VideoLoRAParam, rngs)


class WanBlock(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    kw = dict(rngs=rngs, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype)
    d = cfg.dim
    self.cfg = cfg
    self.attn1 = WanAttention(cfg, rngs=rngs, lora=cfg.has_lora)
    self.attn2 = WanAttention(cfg, rngs=rngs, lora=False)
    self.norm2 = (LayerNorm(d, axis_name="embed", eps=cfg.eps, rngs=rngs,
                            param_dtype=cfg.jnp_param_dtype) if cfg.cross_attn_norm else None)
    self.ffn_in = Linear(d, cfg.ffn_dim, axes=("embed", "mlp"), **kw)
    self.ffn_out = Linear(cfg.ffn_dim, d, axes=("mlp", "embed"), **kw)
    normal = lambda key, shape, dt: jax.random.normal(key, shape, dt) / d ** 0.5
    self.scale_shift_table = param(rngs, normal, (1, 6, d), jnp.float32, (None, None, "embed"))
    # Created last, so that adding them leaves every other weight's random init unchanged.
    self.video_lora = video_adapters(cfg, rngs) if cfg.has_video_lora else None
    # The reference set's FFN targets (model.lora_targets ffn_in / ffn_out; not the paper's):
    # references' own FFN, so they reshape their hidden states between layers.
    ffn = [t for t in cfg.lora_targets if t in FFN_TARGETS] if cfg.has_lora else []
    self.ref_ffn_lora = (adapter_set(cfg, ffn, cfg.lora_rank, cfg.lora_scale, nnx.LoRAParam, rngs)
                         if ffn else None)

  def _mods(self, stream: Stream):
    m = self.scale_shift_table[...][None] + stream.mod  # (B, G, 6, D)
    return [m[:, :, i] for i in range(6)]

  def _ffn(self, x, shift, scale, gate, adapters=()):
    h = modulated_norm(x, shift, scale, self.cfg.eps)
    h = jax.nn.gelu(adapted(self.ffn_in(h), h, "ffn_in", adapters), approximate=True)
    return gated_residual(x, adapted(self.ffn_out(h), h, "ffn_out", adapters), gate)

  def reference_qkv(self, ref: Stream):
    """The reference stream's self-attention q/k/v: frozen weights + LoRA, its own RoPE."""
    shift, scale = self._mods(ref)[:2]
    h = modulated_norm(ref.x, shift, scale, self.cfg.eps)
    return self.attn1.qkv(h, h, ref.cos, ref.sin, use_lora=True)

  def reference_finish(self, ref: Stream, attn_out: jax.Array) -> jax.Array:
    """Residual + FFN for references (no text cross-attention: its output is zero for refs)."""
    _, _, gate, c_shift, c_scale, c_gate = self._mods(ref)
    x = gated_residual(ref.x, self.attn1.out(attn_out, use_lora=True), gate)
    return constrain(self._ffn(x, c_shift, c_scale, c_gate, (self.ref_ffn_lora,)), HIDDEN)

  def __call__(self, video: Stream, context: jax.Array, context_lengths=None,
               ref: Stream | None = None, ref_lengths=None, ref_kv=None):
    """Returns (video hidden states, reference hidden states or None, this layer's ref (k, v)).

    ref: the live reference stream (training, or the cache-free forward);
    ref_kv: this layer's cached reference (k, v) (inference after `encode_references`).
    """
    cfg = self.cfg
    shift, scale, gate, c_shift, c_scale, c_gate = self._mods(video)
    h = modulated_norm(video.x, shift, scale, cfg.eps)
    ref_lora = ref is not None and not cfg.aipa  # the symmetric ablation adapts every token
    adapters = (self.video_lora,)  # the video tokens' own set (None: no adapter)
    q, k, v = self.attn1.qkv(h, h, video.cos, video.sin, use_lora=ref_lora, adapters=adapters)
    new_ref, kv_out = None, None
    lv = q.shape[1]
    opts = attention_options(cfg)
    if ref is not None:
      qr, kr, vr = self.reference_qkv(ref)
      kv_out = (kr, vr)
      if cfg.aipa:
        o, o_ref = aipa_attention(q, k, v, qr, kr, vr, ref_lengths, **opts)
      else:
        joint = attention(jnp.concatenate([q, qr.astype(q.dtype)], axis=1), (k, kr), (v, vr),
                          lv + ref_lengths, **opts)
        o, o_ref = joint[:, :lv], joint[:, lv:]
      new_ref = self.reference_finish(ref, o_ref)
    elif ref_kv is not None:
      kc, vc = ref_kv
      o = attention(q, (k, kc), (v, vc), lv + ref_lengths, **opts)
    else:
      o = attention(q, k, v, None, **opts)
    x = gated_residual(video.x, self.attn1.out(o, use_lora=ref_lora, adapters=adapters), gate)
    # Text cross-attention (video tokens only).
    h = self.norm2(x) if self.norm2 is not None else x
    qt, kt, vt = self.attn2.qkv(h, context)
    x = x + self.attn2.out(attention(qt, kt, vt, context_lengths, **opts), False)
    ffn_adapters = adapters + ((self.ref_ffn_lora,) if ref_lora else ())
    x = constrain(self._ffn(x, c_shift, c_scale, c_gate, ffn_adapters), HIDDEN)
    return x, new_ref, kv_out
