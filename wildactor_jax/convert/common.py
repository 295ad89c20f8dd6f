"""Shared machinery for the weight converters: safe tensor reading and key checks.

Weight files are read tensor by tensor from `.safetensors` (memory-mapped); pickled formats
(`.pt`, `.pth`, `.bin`, `.ckpt`) are refused, since unpickling runs arbitrary code. The output
format (and its writer) is `wildactor_jax.models.checkpoint_io`'s.
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterable, Mapping

import ml_dtypes
import numpy as np

from wildactor_jax import fs
from wildactor_jax.models.checkpoint_io import CheckpointError, read_json

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


class ConversionError(CheckpointError):
  """A one-line, user-facing reason a conversion cannot proceed (bad or unsupported weights)."""


def source_folder(src: str) -> str:
  """The folder of a weights source (SRC itself, or the folder holding the file SRC), where its
  config.json and tokenizer files sit."""
  return src if fs.isdir(src) else os.fspath(fs.path(src).parent)


def safetensors_files(src: str) -> list[str]:
  """The .safetensors files of a weights folder (or a single file); refuses pickled weights."""
  fs.local_path(src, "--src")  # tensors are memory-mapped: a bucket must be mounted first
  if fs.isfile(src):
    candidates = [src]
  elif fs.isdir(src):
    candidates = [fs.join(src, f) for f in fs.listdir(src)]
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
    weight_map = read_json(index[0], "shard index").get("weight_map")
    if not isinstance(weight_map, dict):
      raise ConversionError(f"{index[0]}: no weight_map (tensor name -> shard file)")
    folder = os.path.dirname(index[0])
    shards = [fs.join(folder, s) for s in sorted(set(weight_map.values()))]
    missing = [os.path.basename(s) for s in shards if not fs.isfile(s)]
    if missing:
      raise ConversionError(f"{index[0]}: names missing shard files {missing}")
    tensors = shards
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
  never holds more than the tensor being converted. Every header entry is checked when the file
  is opened, including that the data it names lies inside the file (a download cut short).
  """

  def __init__(self, files: Iterable[str]):
    # key -> (file as the user named it, local file, dtype, shape, absolute byte offset)
    self._where: dict[str, tuple[str, str, np.dtype, tuple[int, ...], int]] = {}
    for f in files:
      local = fs.local_path(f, "safetensors file")  # memory-mapping needs a local file
      size = os.path.getsize(local)
      with open(local, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if size < 8 or 8 + n > size:
          raise ConversionError(f"{f}: truncated safetensors file ({size} bytes, shorter than "
                                "its header)")
        try:
          header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
          raise ConversionError(f"{f}: unreadable safetensors header ({e})") from None
      if not isinstance(header, dict):
        raise ConversionError(f"{f}: unreadable safetensors header (not a JSON object)")
      data_end = 0
      for key, info in header.items():
        if key != "__metadata__":
          self._where[key] = self._entry(f, local, key, info, 8 + n)
          data_end = max(data_end, 8 + n + info["data_offsets"][1])
      if data_end > size:
        raise ConversionError(f"{f}: truncated safetensors file (its header needs {data_end} "
                              f"bytes, the file has {size}); download it again")

  @staticmethod
  def _entry(f, local, key, info, base):
    try:
      dtype_name, shape, (start, stop) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
      shape = tuple(int(d) for d in shape)
    except (KeyError, TypeError, ValueError):
      raise ConversionError(f"{f}: tensor {key} has a malformed header entry {info}") from None
    if dtype_name not in SAFETENSORS_DTYPES:
      raise ConversionError(f"{f}: tensor {key} has unsupported dtype {dtype_name}")
    dtype = np.dtype(SAFETENSORS_DTYPES[dtype_name])
    if start < 0 or stop - start != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
      raise ConversionError(f"{f}: tensor {key} byte range does not match shape {shape}")
    return f, local, dtype, shape, base + start

  def keys(self) -> set[str]:
    return set(self._where)

  def shape(self, key: str) -> tuple[int, ...]:
    """A tensor's shape from the header, without touching its data."""
    return self._where[key][3]

  def get(self, key: str) -> np.ndarray:
    _, local, dtype, shape, offset = self._where[key]
    if not math.prod(shape):
      return np.zeros(shape, dtype)
    return np.memmap(local, dtype=dtype, mode="r", offset=offset, shape=shape)


def check_shapes(found: Mapping[str, tuple], expected: Mapping[str, tuple], what: str) -> None:
  """Each tensor's shape against what the config implies, before anything is written; the first
  mismatch is an error naming the tensor, its shape and the expected one."""
  for key in sorted(found):
    if tuple(found[key]) != tuple(expected[key]):
      raise ConversionError(f"{what}: tensor {key} has shape {tuple(found[key])}, the config "
                            f"implies {tuple(expected[key])}")


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
