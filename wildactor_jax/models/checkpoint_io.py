"""Our model checkpoint format: OUT/params (an Orbax checkpoint of the parameter tree) + OUT/config.json.

The converters (`python -m wildactor_jax.convert`) and the models' own savers write it; the model
loaders read it. It lives under `models/` so that loading a model never imports the converters.

Converted tensors go straight into disk-backed arrays, so even a 5B model in float32 is written
without two full copies in RAM; the checkpoint is written to a temporary folder and renamed
into place.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Callable, Mapping

import ml_dtypes
import numpy as np

DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


class CheckpointError(ValueError):
  """A one-line, user-facing reason a checkpoint cannot be read or written."""


def read_json(path: str, what: str) -> dict:
  try:
    with open(path) as fh:
      return json.load(fh)
  except FileNotFoundError:
    raise CheckpointError(f"{path}: missing {what}") from None
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path}: not valid JSON ({e})") from None


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
    raise CheckpointError(f"--dtype {dtype}: expected one of {sorted(DTYPES)}")
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
    raise CheckpointError(f"{path}: no params/ folder (is this a converted checkpoint?)")
  with ocp.StandardCheckpointer() as ckptr:
    if abstract is None:
      meta = ckptr.metadata(params_dir)
      tree = getattr(meta, "item_metadata", meta)
      import jax
      abstract = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), tree)
    return ckptr.restore(params_dir, abstract)
