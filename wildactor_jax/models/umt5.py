"""UMT5 text encoder (encoder stack only) in Flax NNX, and Wan's prompt-embedding semantics.

Architecture (transformers' UMT5EncoderModel): token embedding; per layer pre-RMSNorm
self-attention with its OWN relative position bias table (unlike T5, which shares layer 0's) and
no 1/sqrt(d) scaling, then pre-RMSNorm gated-GELU FFN (wi_0, wi_1, wo; tanh GELU); final RMSNorm.
No biases anywhere. Layers are a Python loop over an nnx.List: each layer has its own bias table,
the encoder runs once per prompt batch, and a 24-layer unrolled jit compiles in seconds.

`TextEncoder.encode(prompts)` follows Wan: pad to 512 tokens with a mask, run the encoder, then zero
every position past each prompt's length (Wan trims each embedding to its length and zero-pads).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wildactor_jax import fs
from wildactor_jax.models.layers import Linear, RMSNorm, param
from wildactor_jax.models.tokenizer import TEXT_LEN, TOKENIZER_FILES, Tokenizer

ACTIVATIONS = {
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class UMT5Config:
  vocab_size: int = 256384
  d_model: int = 4096
  d_kv: int = 64
  num_heads: int = 64
  d_ff: int = 10240
  num_layers: int = 24
  num_buckets: int = 32
  max_distance: int = 128
  eps: float = 1e-6
  act: str = "gelu_new"

  def __post_init__(self):
    if self.act not in ACTIVATIONS:
      raise ValueError(f"activation {self.act!r}: expected one of {sorted(ACTIVATIONS)}")

  @classmethod
  def from_dict(cls, d: dict) -> "UMT5Config":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})

  def to_dict(self) -> dict:
    return dict(dataclasses.asdict(self), model_type="umt5_encoder")


# ----------------------------------------------------------------------------- pure math

def relative_position_bucket(rel: jax.Array, num_buckets: int, max_distance: int) -> jax.Array:
  """Bidirectional T5 bucketing of rel = key_pos - query_pos: half the buckets per direction;
  within each, exact buckets for |rel| < n/2, then log-spaced buckets up to max_distance, then
  clipped. The float ops mirror transformers' order in float32 so boundaries land identically."""
  half = num_buckets // 2
  bucket = jnp.where(rel > 0, half, 0)
  rel = jnp.abs(rel)
  max_exact = half // 2
  # max(rel, 1) keeps log finite on the exact branch, whose value the where discards anyway.
  ratio = jnp.log(jnp.maximum(rel, 1).astype(jnp.float32) / max_exact)
  ratio = ratio / jnp.float32(math.log(max_distance / max_exact)) * (half - max_exact)
  large = jnp.minimum(max_exact + ratio.astype(jnp.int32), half - 1)
  return bucket + jnp.where(rel < max_exact, rel, large)


def relative_position_bias(table: jax.Array, q_len: int, k_len: int,
                           max_distance: int) -> jax.Array:
  """(num_buckets, H) table -> additive attention bias (H, q_len, k_len) in float32."""
  rel = jnp.arange(k_len)[None, :] - jnp.arange(q_len)[:, None]
  buckets = relative_position_bucket(rel, table.shape[0], max_distance)
  return jnp.take(table.astype(jnp.float32), buckets, axis=0).transpose(2, 0, 1)


def t5_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array,
                 key_mask: jax.Array) -> jax.Array:
  """softmax(q k^T + bias) v with no 1/sqrt(d) scale (T5 folds it into the init).
  q, k, v (B, L, H, D); bias (H, Lq, Lk); key_mask (B, Lk) bool. Softmax in float32."""
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  scores = scores + bias[None]
  scores = jnp.where(key_mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


# ----------------------------------------------------------------------------- modules

class UMT5Attention(nnx.Module):

  def __init__(self, cfg: UMT5Config, *, rngs: nnx.Rngs | None, dtype, param_dtype):
    inner = cfg.num_heads * cfg.d_kv
    kw = dict(rngs=rngs, use_bias=False, dtype=dtype, param_dtype=param_dtype)
    self.q = Linear(cfg.d_model, inner, axes=("embed", "heads"), **kw)
    self.k = Linear(cfg.d_model, inner, axes=("embed", "heads"), **kw)
    self.v = Linear(cfg.d_model, inner, axes=("embed", "heads"), **kw)
    self.o = Linear(inner, cfg.d_model, axes=("heads", "embed"), **kw)
    self.rel_bias = param(rngs, nnx.initializers.normal(1.0), (cfg.num_buckets, cfg.num_heads),
                          param_dtype, (None, "heads"))
    self.num_heads, self.d_kv, self.max_distance = cfg.num_heads, cfg.d_kv, cfg.max_distance

  def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
    b, length, _ = x.shape
    split = lambda t: t.reshape(b, length, self.num_heads, self.d_kv)
    bias = relative_position_bias(self.rel_bias[...], length, length, self.max_distance)
    out = t5_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), bias, key_mask)
    return self.o(out.reshape(b, length, self.num_heads * self.d_kv))


class UMT5FeedForward(nnx.Module):
  """wo(act(wi_0 x) * wi_1 x)."""

  def __init__(self, cfg: UMT5Config, *, rngs: nnx.Rngs | None, dtype, param_dtype):
    kw = dict(rngs=rngs, use_bias=False, dtype=dtype, param_dtype=param_dtype)
    self.wi_0 = Linear(cfg.d_model, cfg.d_ff, axes=("embed", "mlp"), **kw)
    self.wi_1 = Linear(cfg.d_model, cfg.d_ff, axes=("embed", "mlp"), **kw)
    self.wo = Linear(cfg.d_ff, cfg.d_model, axes=("mlp", "embed"), **kw)
    self.act = ACTIVATIONS[cfg.act]

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.wo(self.act(self.wi_0(x)) * self.wi_1(x))


class UMT5Block(nnx.Module):

  def __init__(self, cfg: UMT5Config, *, rngs: nnx.Rngs | None, dtype, param_dtype):
    kw = dict(rngs=rngs, param_dtype=param_dtype)
    self.attn_norm = RMSNorm(cfg.d_model, axis_name="embed", eps=cfg.eps, **kw)
    self.attn = UMT5Attention(cfg, dtype=dtype, **kw)
    self.ffn_norm = RMSNorm(cfg.d_model, axis_name="embed", eps=cfg.eps, **kw)
    self.ffn = UMT5FeedForward(cfg, dtype=dtype, **kw)

  def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
    x = x + self.attn(self.attn_norm(x), key_mask)
    return x + self.ffn(self.ffn_norm(x))


class UMT5Encoder(nnx.Module):
  """ids (B, L) int, mask (B, L) bool -> final-normed hidden states (B, L, d_model) in `dtype`."""

  def __init__(self, cfg: UMT5Config, *, rngs: nnx.Rngs | None, dtype=jnp.float32,
               param_dtype=jnp.float32):
    self.config = cfg
    self.embed_tokens = param(rngs, nnx.initializers.normal(1.0), (cfg.vocab_size, cfg.d_model),
                              param_dtype, ("vocab", "embed"))
    self.blocks = nnx.List([UMT5Block(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
                            for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg.d_model, axis_name="embed", eps=cfg.eps, rngs=rngs,
                              param_dtype=param_dtype)
    self.dtype = dtype

  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    x = jnp.take(self.embed_tokens[...], ids, axis=0).astype(self.dtype)
    for block in self.blocks:
      x = block(x, mask)
    return self.final_norm(x)


def build_encoder(cfg: UMT5Config, rngs: nnx.Rngs | None = None, dtype=jnp.float32,
                  param_dtype=jnp.float32) -> UMT5Encoder:
  """A model; rngs=None builds it abstractly (shapes only, no memory). Eager sharding is off:
  parameters carry logical axis names as metadata and are placed on restore."""
  with nnx.use_eager_sharding(False):
    if rngs is None:
      return nnx.eval_shape(lambda: UMT5Encoder(cfg, rngs=None, dtype=dtype,
                                                param_dtype=param_dtype))
    return UMT5Encoder(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)


def param_shapes(cfg: UMT5Config) -> dict:
  """The stored parameter tree (nested dict, layer indices as int keys) -> shape tuples."""
  state = nnx.to_pure_dict(nnx.state(build_encoder(cfg), nnx.Param))
  return jax.tree.map(lambda x: tuple(x.shape), state)


# ----------------------------------------------------------------------------- Wan semantics

def _bucket_length(n: int, full: int) -> int:
  """Runs shorter prompts at a power-of-two length (>= 32) instead of the full 512: masked keys
  contribute exactly zero and the bias depends only on relative offsets, so real positions are
  unchanged, and only a handful of shapes are ever compiled."""
  return min(full, max(32, 1 << max(n - 1, 0).bit_length()))


@functools.partial(jax.jit, static_argnames=("graphdef", "out_len"))
def _forward(graphdef, state, ids, mask, out_len):
  model = nnx.merge(graphdef, state)
  hidden = model(ids, mask).astype(jnp.float32)
  lengths = jnp.sum(mask, axis=1)
  keep = jnp.arange(ids.shape[1])[None, :] < lengths[:, None]
  hidden = jnp.where(keep[..., None], hidden, 0.0)
  return jnp.pad(hidden, ((0, 0), (0, out_len - ids.shape[1]), (0, 0)))


class TextEncoder:
  """Prompts -> (embeds (B, text_len, d_model) float32, zero past each prompt's length;
  mask (B, text_len) bool). `bucket` runs short batches at a shorter, exact length."""

  def __init__(self, model: UMT5Encoder, tokenizer: Tokenizer | None = None,
               text_len: int = TEXT_LEN, bucket: bool = True):
    self.model = model
    self.config = model.config
    self.tokenizer = tokenizer
    self.text_len = text_len
    self.bucket = bucket
    self._graphdef, self._state = nnx.split(model)

  def tokenize(self, prompts: Sequence[str]):
    if self.tokenizer is None:
      raise ValueError("this TextEncoder has no tokenizer: pass tokenizer_path to "
                       "load_text_encoder, or call encode_ids with token ids")
    return self.tokenizer(prompts, self.text_len)

  def encode(self, prompts: Sequence[str]):
    ids, mask = self.tokenize(prompts)
    return self.encode_ids(ids, mask)

  def encode_ids(self, ids, mask):
    """ids (B, L) int, mask (B, L) bool with real tokens as a prefix. Positions at or past
    sum(mask) are zero in the output, as in Wan."""
    ids = np.asarray(ids, np.int32)
    mask = np.asarray(mask, np.bool_)
    if ids.ndim != 2 or ids.shape != mask.shape:
      raise ValueError(f"ids {ids.shape} and mask {mask.shape} must be equal (B, L) shapes")
    if ids.size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
      raise ValueError(f"token ids must lie in [0, {self.config.vocab_size})")
    full = ids.shape[1]
    run = full
    if self.bucket:
      used = int(mask.sum(axis=1).max()) if mask.size else 0
      run = _bucket_length(used, full)
    embeds = _forward(self._graphdef, self._state, jnp.asarray(ids[:, :run]),
                      jnp.asarray(mask[:, :run]), out_len=full)
    return embeds, jnp.asarray(mask)

  __call__ = encode


# ----------------------------------------------------------------------------- I/O

def _abstract_params(cfg: UMT5Config, dtype, mesh=None, rules=None) -> dict:
  """ShapeDtypeStructs for restore: on the default device, or on `mesh` (replicated, or laid out
  by mapping each parameter's logical axis names through `rules` when given)."""
  state = nnx.state(build_encoder(cfg), nnx.Param)
  shapes = nnx.to_pure_dict(state)
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype, sharding=device), shapes)
  from flax.linen import logical_to_mesh_axes
  # The encoder's jnp code leaves layouts to the compiler, so it needs Auto mesh axes; an
  # Explicit-axes mesh (jax.make_mesh's default) would demand out_sharding on every matmul.
  auto = (jax.sharding.AxisType.Auto,) * len(mesh.axis_names)
  mesh = jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=auto)
  is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
  specs = nnx.to_pure_dict(nnx.get_partition_spec(state))

  def place(s, spec):
    mesh_spec = logical_to_mesh_axes(tuple(spec), rules) if rules else jax.sharding.PartitionSpec()
    return jax.ShapeDtypeStruct(s.shape, dtype,
                                sharding=jax.sharding.NamedSharding(mesh, mesh_spec))

  return jax.tree.map(place, shapes, specs, is_leaf=lambda x: is_spec(x) or
                      isinstance(x, jax.ShapeDtypeStruct))


def load_text_encoder(path: str, tokenizer_path: str | None = None, dtype=jnp.float32,
                      text_len: int = TEXT_LEN, mesh=None, rules=None) -> TextEncoder:
  """A converted checkpoint (OUT/{params/, config.json}) -> TextEncoder. Parameters are restored
  in `dtype` (which is also the compute dtype). The tokenizer comes from `tokenizer_path`, else
  from tokenizer files the converter copied next to the weights; without one only `encode_ids`
  works."""
  from wildactor_jax.models.checkpoint_io import read_config, read_params
  cfg = UMT5Config.from_dict(read_config(path))
  abstract = _abstract_params(cfg, dtype, mesh, rules)
  params = read_params(path, abstract)
  model = build_encoder(cfg, dtype=dtype, param_dtype=dtype)
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)
  if tokenizer_path is None and any(
      fs.isfile(fs.join(path, f)) for f in ("tokenizer.json", "spiece.model")):
    tokenizer_path = path
  tokenizer = Tokenizer.from_path(tokenizer_path) if tokenizer_path else None
  return TextEncoder(model, tokenizer, text_len=text_len)


def copy_tokenizer_files(src: str, out: str) -> list[str]:
  """Copies tokenizer files found in folder `src` (or the file `src`; local or gs://) into the
  local folder `out` (a checkpoint being staged)."""
  if fs.isfile(src):
    name = fs.path(src).name
    fs.copy_to_local(src, os.path.join(out, name))
    return [name]
  copied = []
  for name in TOKENIZER_FILES:
    if fs.isfile(fs.join(src, name)):
      fs.copy_to_local(fs.join(src, name), os.path.join(out, name))
      copied.append(name)
  return copied


def save_random(out: str, cfg: UMT5Config, seed: int = 0, dtype: str = "float32",
                tokenizer_path: str | None = None) -> dict:
  """Saves a randomly initialised encoder in our checkpoint format (for demos and tests; no
  torch needed), plus a tokenizer file/folder if given. Norm weights are perturbed around 1 so
  they matter in parity tests."""
  from wildactor_jax.models.checkpoint_io import write_checkpoint
  model = build_encoder(cfg, nnx.Rngs(seed))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  rng = np.random.default_rng(seed)

  def build(tree):
    def put(path, leaf):
      keys = tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)
      value = np.asarray(leaf, np.float32)
      if keys[-1] == "weight":  # RMSNorm scale
        value = 1.0 + 0.1 * rng.standard_normal(value.shape).astype(np.float32)
      tree.put(keys, value)
    jax.tree_util.tree_map_with_path(put, params)
    return cfg.to_dict()

  # The tokenizer goes into the folder being published (OUT may be a gs:// URI).
  copied = write_checkpoint(out, build, dtype, extra=(
      lambda folder: copy_tokenizer_files(tokenizer_path, folder)) if tokenizer_path else None)
  return dict(cfg.to_dict(), tokenizer=copied or [])
