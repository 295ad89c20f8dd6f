"""transformers UMT5 checkpoint (safetensors) -> our UMT5 text encoder checkpoint.

SRC is a transformers folder: config.json plus model.safetensors or shards with an index. A
UMT5EncoderModel, UMT5Model or UMT5ForConditionalGeneration checkpoint all work: we keep the
encoder and the token embedding (`encoder.embed_tokens.weight`, else the tied `shared.weight`),
and skip decoder weights by an explicit rule (`decoder.*`, `lm_head.weight`). Any other key, or a
missing one, is an error. Torch Linear weights (out, in) become kernels (in, out). Tokenizer files
found in SRC (tokenizer.json, spiece.model, ...) are copied next to the converted weights.
"""
from __future__ import annotations


import numpy as np

from wildactor_jax import fs
from wildactor_jax.convert.common import (ConversionError, TensorReader, check_keys,
                                          safetensors_files, source_folder)
from wildactor_jax.models.checkpoint_io import read_json, write_checkpoint

EMBED_KEYS = ("encoder.embed_tokens.weight", "shared.weight")


def is_ignored(key: str) -> bool:
  """Weights of the decoder half of a full UMT5 model: not needed by a text encoder."""
  return key.startswith("decoder.") or key == "lm_head.weight"


def config_from_hf(hf: dict):
  """transformers UMT5Config dict -> our UMT5Config; refuses layouts we do not implement."""
  from wildactor_jax.models.umt5 import ACTIVATIONS, UMT5Config
  model_type = hf.get("model_type")
  if model_type != "umt5":
    raise ConversionError(
        f"config.json model_type {model_type!r}: expected 'umt5' (T5/mT5 share one relative "
        "position bias across layers, a different layout)")
  proj = hf.get("feed_forward_proj", "gated-gelu")
  gated, _, act = proj.rpartition("-")
  if gated != "gated":
    raise ConversionError(f"feed_forward_proj {proj!r}: only gated FFNs (gated-gelu) are supported")
  act = "gelu_new" if act == "gelu" else act  # transformers maps gated-gelu to the tanh GELU
  if act not in ACTIVATIONS:
    raise ConversionError(f"feed_forward_proj {proj!r}: unsupported activation {act!r}")
  try:
    return UMT5Config(
        vocab_size=int(hf["vocab_size"]), d_model=int(hf["d_model"]), d_kv=int(hf["d_kv"]),
        num_heads=int(hf["num_heads"]), d_ff=int(hf["d_ff"]), num_layers=int(hf["num_layers"]),
        num_buckets=int(hf.get("relative_attention_num_buckets", 32)),
        max_distance=int(hf.get("relative_attention_max_distance", 128)),
        eps=float(hf.get("layer_norm_epsilon", 1e-6)), act=act)
  except KeyError as e:
    raise ConversionError(f"config.json: missing field {e.args[0]!r}") from None


def key_map(num_layers: int) -> dict[str, tuple[tuple, bool]]:
  """transformers key (embedding excluded) -> (our param path, transpose?)."""
  out = {"encoder.final_layer_norm.weight": (("final_norm", "weight"), False)}
  for i in range(num_layers):
    p = f"encoder.block.{i}.layer."
    b = ("blocks", i)
    out[p + "0.layer_norm.weight"] = (b + ("attn_norm", "weight"), False)
    out[p + "0.SelfAttention.relative_attention_bias.weight"] = (b + ("attn", "rel_bias"), False)
    for name in ("q", "k", "v", "o"):
      out[p + f"0.SelfAttention.{name}.weight"] = (b + ("attn", name, "kernel"), True)
    out[p + "1.layer_norm.weight"] = (b + ("ffn_norm", "weight"), False)
    for name in ("wi_0", "wi_1", "wo"):
      out[p + f"1.DenseReluDense.{name}.weight"] = (b + ("ffn", name, "kernel"), True)
  return out


def _get(shapes: dict, path: tuple):
  node = shapes
  for p in path:
    node = node[p]
  return node


def convert(src: str, out: str, dtype: str = "float32") -> dict:
  from wildactor_jax.models.umt5 import copy_tokenizer_files, param_shapes
  files = safetensors_files(src)
  folder = source_folder(src)
  cfg = config_from_hf(read_json(fs.join(folder, "config.json"), "config.json"))
  reader = TensorReader(files)
  found = reader.keys()
  mapping = key_map(cfg.num_layers)
  embed_key = next((k for k in EMBED_KEYS if k in found), None)
  if embed_key is None:
    raise ConversionError(f"{src}: missing the token embedding (one of {list(EMBED_KEYS)})")
  ignored = {k for k in found if is_ignored(k)}
  check_keys(set(mapping) | (set(EMBED_KEYS) & found), found - ignored, src)
  shapes = param_shapes(cfg)
  items = [(embed_key, (("embed_tokens",), False))] + sorted(mapping.items())
  for key, (path, transpose) in items:  # before writing anything (header shapes, no data read)
    got, want = reader.shape(key), _get(shapes, path)
    got = got[::-1] if transpose else got
    if tuple(got) != tuple(want):
      raise ConversionError(f"{key}: shape {tuple(got)} does not match the config "
                            f"(expected {tuple(want)}{' after transposing' if transpose else ''})")

  def build(tree):
    for key, (path, transpose) in items:
      value = reader.get(key)
      if value.dtype not in (np.float32, np.float16) and value.dtype.name != "bfloat16":
        raise ConversionError(f"{key}: unexpected dtype {value.dtype}")
      tree.put(path, value.T if transpose else value)
    return cfg.to_dict()

  # Tokenizer files go into the staged checkpoint, so they are published with it.
  tokenizer = write_checkpoint(out, build, dtype,
                               extra=lambda staged: copy_tokenizer_files(folder, staged))
  return dict(num_layers=cfg.num_layers, d_model=cfg.d_model, vocab_size=cfg.vocab_size,
              tensors=len(mapping) + 1, ignored=len(ignored), tokenizer=tokenizer)
