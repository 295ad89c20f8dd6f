"""Wan transformer weights (diffusers or original Wan layout, safetensors) -> our checkpoint.

Detects the layout from the keys: diffusers (`blocks.0.attn1.to_q.weight`) or the original Wan
release (`blocks.0.self_attn.q.weight`). The config comes from config.json (either layout's) or,
failing that, from tensor shapes (head_dim 128 assumed). Tensors are converted one at a time into
disk-backed arrays; per-layer tensors are written into their slot of the stacked (L, ...) array.
"""
from __future__ import annotations

import math
import re

import numpy as np

from wildactor_jax import fs
from wildactor_jax.convert.common import (ConversionError, TensorReader, check_keys,
                                          check_shapes, safetensors_files, source_folder)
from wildactor_jax.models.checkpoint_io import read_json, write_checkpoint

# original Wan name -> diffusers name (module prefixes; block-level parts handled below)
_ORIGINAL_TOP = {
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
    "head.modulation": "scale_shift_table",
    "patch_embedding": "patch_embedding",
}
_ORIGINAL_BLOCK = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0", "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "norm3": "norm2",  # the original's affine cross-attention norm is diffusers' norm2
    "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2", "modulation": "scale_shift_table",
}
# diffusers module -> our module path (inside blocks for the per-layer ones)
_TOP = {
    "patch_embedding": ("patch_embedding",),
    "condition_embedder.time_embedder.linear_1": ("time_embedder", "linear_1"),
    "condition_embedder.time_embedder.linear_2": ("time_embedder", "linear_2"),
    "condition_embedder.text_embedder.linear_1": ("text_embedder", "linear_1"),
    "condition_embedder.text_embedder.linear_2": ("text_embedder", "linear_2"),
    "condition_embedder.time_proj": ("time_proj",),
    "proj_out": ("proj_out",),
}
_BLOCK = {
    **{f"attn{n}.to_{p}": (f"attn{n}", f"to_{p}") for n in (1, 2) for p in "qkv"},
    "attn1.to_out.0": ("attn1", "to_out"), "attn2.to_out.0": ("attn2", "to_out"),
    **{f"attn{n}.norm_{p}": (f"attn{n}", f"norm_{p}") for n in (1, 2) for p in "qk"},
    "norm2": ("norm2",), "ffn.net.0.proj": ("ffn_in",), "ffn.net.2": ("ffn_out",),
}


def _to_diffusers_name(key: str) -> str:
  key = key.removeprefix("model.diffusion_model.")
  m = re.match(r"blocks\.(\d+)\.(.+)\.(weight|bias)$|blocks\.(\d+)\.modulation$", key)
  if m and m.group(4) is not None:
    return f"blocks.{m.group(4)}.scale_shift_table"
  if m:
    i, module, leaf = m.groups()[:3]
    return f"blocks.{i}.{_ORIGINAL_BLOCK.get(module, module)}.{leaf}"
  for old, new in _ORIGINAL_TOP.items():
    if key == old or key.startswith(old + "."):
      return new + key[len(old):]
  return key


_CONFIG_TENSORS = {
    "patch_embedding.weight": 5, "blocks.0.ffn.net.0.proj.weight": 2, "proj_out.weight": 2,
    "condition_embedder.text_embedder.linear_1.weight": 2,
    "condition_embedder.time_embedder.linear_1.weight": 2,
}


def _config(src: str, reader: TensorReader, names: dict[str, str]) -> dict:
  cfg_path = fs.join(source_folder(src), "config.json")
  raw = read_json(cfg_path, "config.json") if fs.exists(cfg_path) else {}
  shape = lambda k: reader.shape(names[k])
  if raw.get("image_dim") or raw.get("added_kv_proj_dim"):
    raise ConversionError(f"{cfg_path}: image-conditioned Wan (image_dim/added_kv_proj_dim) is "
                          "not supported; expected a T2V or TI2V transformer")
  for key, ndim in _CONFIG_TENSORS.items():  # the tensors the config is read from
    if len(shape(key)) != ndim:
      raise ConversionError(f"{src}: tensor {names[key]} has shape {shape(key)}, expected "
                            f"{ndim} dimensions")
  patch_w = shape("patch_embedding.weight")
  dim, in_ch = patch_w[:2]
  patch = tuple(int(p) for p in patch_w[2:])
  layers = 1 + max(int(k.split(".")[1]) for k in names if k.startswith("blocks."))
  head_dim = raw.get("attention_head_dim", 128)
  heads = raw.get("num_attention_heads", raw.get("num_heads"))
  if heads is None:
    if dim % head_dim:
      raise ConversionError(f"{src}: no config.json and dim {dim} is not a multiple of "
                            f"{head_dim}; add the release's config.json (num_heads)")
    heads = dim // head_dim
  cfg = {
      "dim": int(dim), "num_heads": int(heads), "num_layers": int(layers),
      "in_channels": int(in_ch), "patch_size": list(patch),
      "ffn_dim": int(shape("blocks.0.ffn.net.0.proj.weight")[0]),
      "out_channels": int(shape("proj_out.weight")[0] // math.prod(patch)),
      "text_dim": int(shape("condition_embedder.text_embedder.linear_1.weight")[1]),
      "freq_dim": int(shape("condition_embedder.time_embedder.linear_1.weight")[1]),
      "eps": float(raw.get("eps", 1e-6)),
      "cross_attn_norm": "blocks.0.norm2.weight" in names,
      "rope_max_seq_len": int(raw.get("rope_max_seq_len", 1024)),
  }
  if dim % heads:
    raise ConversionError(f"{src}: dim {dim} not divisible by {heads} heads")
  return cfg


def _expected(cfg: dict) -> set[str]:
  keys = {f"{m}.{leaf}" for m in _TOP for leaf in ("weight", "bias")} | {"scale_shift_table"}
  block = {f"{m}.weight" for m in _BLOCK} | {f"{m}.bias" for m in _BLOCK if "norm_" not in m}
  if not cfg["cross_attn_norm"]:
    block -= {"norm2.weight", "norm2.bias"}
  block.add("scale_shift_table")
  return keys | {f"blocks.{i}.{k}" for i in range(cfg["num_layers"]) for k in block}


def _destination(key: str) -> tuple[tuple[str, ...], int | None]:
  """A diffusers key -> (our parameter path, layer index into the stacked per-layer arrays)."""
  if key == "scale_shift_table":
    return ("scale_shift_table",), None
  if key.startswith("blocks."):
    _, i, rest = key.split(".", 2)
    if rest == "scale_shift_table":
      return ("blocks", "scale_shift_table"), int(i)
    module, _, leaf = rest.rpartition(".")
    kernel = leaf == "weight" and "norm" not in module
    return ("blocks",) + _BLOCK[module] + (("kernel",) if kernel else (leaf,)), int(i)
  module, _, leaf = key.rpartition(".")
  return _TOP[module] + (("kernel",) if leaf == "weight" else ("bias",)), None


def _to_ours(path: tuple[str, ...], w: np.ndarray) -> np.ndarray:
  if path[-1] != "kernel":
    return w
  if path[0] == "patch_embedding":  # Conv3d (D, C, pt, ph, pw) -> (pt*ph*pw*C, D), our patch order
    return w.transpose(2, 3, 4, 1, 0).reshape(-1, w.shape[0])
  return w.T  # torch Linear (out, in) -> kernel (in, out)


def _source_shape(path: tuple[str, ...], ours: tuple[int, ...], cfg: dict) -> tuple[int, ...]:
  """The shape a source tensor must have to become our parameter of shape `ours` (_to_ours's
  inverse on shapes)."""
  if path[-1] != "kernel":
    return ours
  if path[0] == "patch_embedding":
    return (ours[1], cfg["in_channels"], *cfg["patch_size"])
  return ours[::-1]


def _expected_shapes(cfg: dict, names: dict[str, str]) -> dict[str, tuple[int, ...]]:
  """Each diffusers key -> the shape the model built from `cfg` needs (per layer for blocks)."""
  from flax import nnx
  from wildactor_jax.models.config import ModelConfig
  from wildactor_jax.models.loading import FROZEN, abstract_model
  try:
    model_cfg = ModelConfig.from_mapping(dict(cfg, lora=False))
  except ValueError as e:
    raise ConversionError(f"derived config {cfg}: {e}") from None
  params = nnx.to_pure_dict(nnx.state(abstract_model(model_cfg), FROZEN))
  expected = {}
  for key in names:
    path, layer = _destination(key)
    node = params
    for p in path:
      node = node[p]
    ours = tuple(node.shape[1:] if layer is not None else node.shape)
    expected[key] = _source_shape(path, ours, cfg)
  return expected


def convert(src: str, out: str, dtype: str) -> dict:
  files = safetensors_files(src)
  reader = TensorReader(files)
  names = {_to_diffusers_name(k): k for k in reader.keys()}
  layout = "original" if any(".self_attn." in k for k in reader.keys()) else "diffusers"
  if "patch_embedding.weight" not in names:
    raise ConversionError(f"{src}: no patch_embedding.weight; not a Wan transformer "
                          f"(found e.g. {sorted(reader.keys())[:5]})")
  layers = 1 + max((int(k.split(".")[1]) for k in names if k.startswith("blocks.")), default=-1)
  structure = {"num_layers": layers, "cross_attn_norm": "blocks.0.norm2.weight" in names}
  check_keys(_expected(structure), set(names), f"{src} ({layout} layout)")
  cfg = _config(src, reader, names)
  check_shapes({names[k]: reader.shape(names[k]) for k in names},
               {names[k]: v for k, v in _expected_shapes(cfg, names).items()}, src)

  def build(tree):
    for key, orig in names.items():
      path, layer = _destination(key)
      value = _to_ours(path, reader.get(orig))
      if layer is None:
        tree.put(path, value)
      else:
        tree.allocate(path, (cfg["num_layers"],) + value.shape)[layer] = value.astype(tree.dtype)
    return dict(cfg, kind="wan_transformer")

  write_checkpoint(out, build, dtype)
  return {"layout": layout, "tensors": len(names), "num_layers": cfg["num_layers"],
          "dim": cfg["dim"]}
