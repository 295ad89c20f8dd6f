"""Shared machinery for the weight converters: safe tensor reading, key checks, checkpoint I/O.

Weight files are read tensor by tensor from `.safetensors` (memory-mapped); pickled formats
(`.pt`, `.pth`, `.bin`, `.ckpt`) are refused, since unpickling runs arbitrary code. Converted
tensors go straight into disk-backed arrays, so even a 5B model in float32 converts without two
full copies in RAM. The output is an Orbax checkpoint of the parameter tree (`params/`) plus the
model config (`config.json`), written to a temporary folder and renamed into place.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Callable, Iterable, Mapping

import ml_dtypes
import numpy as np

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


class ConversionError(ValueError):
  """A one-line, user-facing reason a conversion cannot proceed."""


def safetensors_files(src: str) -> list[str]:
  """The .safetensors files of a weights folder (or a single file); refuses pickled weights."""
  if os.path.isfile(src):
    candidates = [src]
  elif os.path.isdir(src):
    candidates = sorted(os.path.join(src, f) for f in os.listdir(src))
  else:
    raise ConversionError(f"{src}: no such file or folder")
  tensors = [f for f in candidates if f.endswith(".safetensors")]
  pickled = [f for f in candidates if f.endswith(PICKLE_SUFFIXES)]
  if not tensors:
    if pickled:
      raise ConversionError(
          f"{pickled[0]}: pickled weights are refused (loading them can run arbitrary code); "
          "convert them to .safetensors first")
    raise ConversionError(f"{src}: no .safetensors files found")
  index = [f for f in candidates if f.endswith(".safetensors.index.json")]
  if index:  # sharded: trust the index for the set of shards it names
    with open(index[0]) as fh:
      shards = sorted(set(json.load(fh)["weight_map"].values()))
    folder = os.path.dirname(index[0])
    missing = [s for s in shards if not os.path.exists(os.path.join(folder, s))]
    if missing:
      raise ConversionError(f"{index[0]}: names missing shard files {missing}")
    tensors = [os.path.join(folder, s) for s in shards]
  return tensors


SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


class TensorReader:
  """Lazy, memory-mapped access to every tensor of a set of safetensors files.

  The format is an 8-byte little-endian header length, a JSON header (dtype, shape, byte offsets
  per tensor) and the raw bytes; reading it ourselves keeps bfloat16 exact (via ml_dtypes) and
  never holds more than the tensor being converted.
  """

  def __init__(self, files: Iterable[str]):
    self._where: dict[str, tuple[str, dict, int]] = {}
    for f in files:
      with open(f, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
          raise ConversionError(f"{f}: truncated safetensors file")
        n = int.from_bytes(raw, "little")
        try:
          header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
          raise ConversionError(f"{f}: unreadable safetensors header ({e})") from None
      for key, info in header.items():
        if key == "__metadata__":
          continue
        if info["dtype"] not in SAFETENSORS_DTYPES:
          raise ConversionError(f"{f}: tensor {key} has unsupported dtype {info['dtype']}")
        self._where[key] = (f, info, 8 + n)

  def keys(self) -> set[str]:
    return set(self._where)

  def get(self, key: str) -> np.ndarray:
    f, info, base = self._where[key]
    dtype = np.dtype(SAFETENSORS_DTYPES[info["dtype"]])
    start, stop = info["data_offsets"]
    shape = tuple(info["shape"])
    if stop - start != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
      raise ConversionError(f"{f}: tensor {key} byte range does not match shape {shape}")
    if stop == start:
      return np.zeros(shape, dtype)
    return np.memmap(f, dtype=dtype, mode="r", offset=base + start, shape=shape)


def check_keys(expected: set[str], found: set[str], what: str) -> None:
  """Unknown or missing keys are an error that lists them (at most 20 of each)."""
  missing = sorted(expected - found)
  unknown = sorted(found - expected)
  if missing or unknown:
    parts = []
    if missing:
      parts.append(f"missing {len(missing)} keys {missing[:20]}")
    if unknown:
      parts.append(f"unknown {len(unknown)} keys {unknown[:20]}")
    raise ConversionError(f"{what}: " + "; ".join(parts))


def read_json(path: str, what: str) -> dict:
  try:
    with open(path) as fh:
      return json.load(fh)
  except FileNotFoundError:
    raise ConversionError(f"{path}: missing {what}") from None
  except json.JSONDecodeError as e:
    raise ConversionError(f"{path}: not valid JSON ({e})") from None


class DiskTree:
  """Builds a nested dict of disk-backed (memory-mapped) arrays, one tensor at a time."""

  def __init__(self, folder: str, dtype):
    self.folder = folder
    self.dtype = dtype
    self.tree: dict = {}
    self._count = 0

  def _node(self, path: tuple[str, ...]) -> dict:
    node = self.tree
    for p in path[:-1]:
      node = node.setdefault(p, {})
    return node

  def put(self, path: tuple[str, ...], value: np.ndarray) -> None:
    self.allocate(path, value.shape)[...] = value.astype(self.dtype)

  def allocate(self, path: tuple[str, ...], shape) -> np.ndarray:
    node = self._node(path)
    if path[-1] not in node:
      self._count += 1
      file = os.path.join(self.folder, f"t{self._count}.npy")
      node[path[-1]] = np.lib.format.open_memmap(file, mode="w+", dtype=self.dtype,
                                                 shape=tuple(shape))
    return node[path[-1]]


def write_checkpoint(out: str, build: Callable[[DiskTree], dict], dtype: str) -> None:
  """Runs `build(tree) -> config` and writes OUT/{params/, config.json} atomically."""
  import orbax.checkpoint as ocp
  if dtype not in DTYPES:
    raise ConversionError(f"--dtype {dtype}: expected one of {sorted(DTYPES)}")
  out = os.path.abspath(out)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".convert-", dir=parent)
  scratch = tempfile.mkdtemp(prefix=".scratch-", dir=parent)
  try:
    tree = DiskTree(scratch, DTYPES[dtype])
    config = build(tree)
    config = dict(config, param_dtype=dtype)
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(os.path.join(staging, "params"), tree.tree)
      ckptr.wait_until_finished()
    with open(os.path.join(staging, "config.json"), "w") as fh:
      json.dump(config, fh, indent=2, sort_keys=True)
    if os.path.exists(out):
      shutil.rmtree(out)
    os.replace(staging, out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def read_config(path: str) -> dict:
  return read_json(os.path.join(path, "config.json"), "config.json (is this a converted checkpoint?)")


def read_params(path: str, abstract: Mapping | None = None) -> dict:
  """Restores OUT/params. With `abstract` (a tree of jax.ShapeDtypeStruct with shardings), the
  arrays land directly on those devices/shardings; otherwise as host numpy arrays."""
  import orbax.checkpoint as ocp
  params_dir = os.path.join(os.path.abspath(path), "params")
  if not os.path.isdir(params_dir):
    raise ConversionError(f"{path}: no params/ folder (is this a converted checkpoint?)")
  with ocp.StandardCheckpointer() as ckptr:
    if abstract is None:
      meta = ckptr.metadata(params_dir)
      tree = getattr(meta, "item_metadata", meta)
      import jax
      abstract = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), tree)
    return ckptr.restore(params_dir, abstract)
