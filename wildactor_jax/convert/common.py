"""Shared machinery for the weight converters: safe tensor reading and key checks.

Weight files are read tensor by tensor from `.safetensors` (memory-mapped); pickled formats
(`.pt`, `.pth`, `.bin`, `.ckpt`) are refused, since unpickling runs arbitrary code. The output
format (and its writer) is `wildactor_jax.models.checkpoint_io`'s.
"""
from __future__ import annotations

import json
import os
from typing import Iterable

import ml_dtypes
import numpy as np

from wildactor_jax.models.checkpoint_io import CheckpointError

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


class ConversionError(CheckpointError):
  """A one-line, user-facing reason a conversion cannot proceed (bad or unsupported weights)."""


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
