"""Our model checkpoint format: OUT/params (an Orbax checkpoint of the parameter tree) + OUT/config.json.

The converters (`python -m wildactor_jax.convert`) and the models' own savers write it; the model
loaders read it. It lives under `models/` so that loading a model never imports the converters.

Writing is staged: tensors go into disk-backed arrays (so a 5B model in float32 is never held
twice in RAM), the checkpoint is written to a hidden folder beside OUT, then renamed into place.
An existing OUT is only ever replaced when it is one of our checkpoints, and then by rename
(old aside, new in, old removed), so a crash at any point leaves a complete checkpoint under OUT.
A non-empty folder that is not a checkpoint, or a file, is refused: user files are never deleted.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from typing import Callable, Mapping

import ml_dtypes
import numpy as np

from wildactor_jax import fs
from wildactor_jax.models.tokenizer import TOKENIZER_FILES

DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}
PARAMS = "params"
CONFIG = "config.json"
# What a checkpoint folder may hold besides params/ and config.json: the text encoder's tokenizer.
EXTRA_FILES = frozenset(TOKENIZER_FILES)


class CheckpointError(ValueError):
  """A one-line, user-facing reason a checkpoint cannot be read or written."""


def read_json(path: str, what: str) -> dict:
  """A JSON file (local or gs://) whose absence or damage is a one-line error naming it."""
  try:
    return json.loads(fs.read_text(path))
  except FileNotFoundError:
    raise CheckpointError(f"{path}: missing {what}") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def read_config(path: str) -> dict:
  return read_json(fs.join(path, CONFIG), "config.json (is this a converted checkpoint?)")


def is_checkpoint(path: str) -> bool:
  """Whether folder `path` is one of our checkpoints: params/ + config.json and nothing else but
  tokenizer files (so replacing it can never take a user's file with it)."""
  names = set(fs.listdir(path))
  return (PARAMS in names and CONFIG in names and fs.isdir(fs.join(path, PARAMS))
          and names <= {PARAMS, CONFIG} | EXTRA_FILES)


def check_output(out: str) -> None:
  """Refuses an output path that writing a checkpoint would clobber: a file, or a non-empty
  folder that is not one of our checkpoints. A missing or empty folder, or a checkpoint, is fine."""
  if not fs.exists(out):
    return
  if not fs.isdir(out):
    raise CheckpointError(f"{out}: is an existing file; expected a new folder or a converted "
                          "checkpoint to replace")
  if fs.listdir(out) and not is_checkpoint(out):
    raise CheckpointError(f"{out}: is a non-empty folder that is not a converted checkpoint "
                          f"(params/ + {CONFIG}); refusing to replace it, choose a new folder")


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


def _save(folder: str, tree: DiskTree, config: dict) -> None:
  import orbax.checkpoint as ocp
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(fs.join(folder, PARAMS), tree.tree)
    ckptr.wait_until_finished()
  fs.atomic_write_json(fs.join(folder, CONFIG), config, sort_keys=True)


def _sibling(target, tag: str):
  """A hidden name beside `target`, unique to this call."""
  return target.parent / f".{target.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def write_checkpoint(out: str, build: Callable[[DiskTree], dict], dtype: str,
                     extra: Callable[[str], object] | None = None):
  """Runs `build(tree) -> config` and writes OUT/{params/, config.json}; returns `extra(folder)`,
  which may add files (e.g. a tokenizer) to the local folder being published as the checkpoint.

  Locally the checkpoint is staged beside OUT and renamed into place. On an object store (gs://)
  a folder cannot be renamed: OUT must be new (or empty), and config.json is written last, so a
  checkpoint without it reads as incomplete.
  """
  if dtype not in DTYPES:
    raise CheckpointError(f"--dtype {dtype}: expected one of {sorted(DTYPES)}")
  check_output(out)
  target = fs.path(out)
  remote = fs.is_remote(target)
  if remote and fs.listdir(target):
    raise CheckpointError(f"{out}: replacing a checkpoint in an object store is not atomic; "
                          "write to a new path (or delete the old one yourself)")
  target.parent.mkdir(parents=True, exist_ok=True)
  # Local: scratch arrays and the staged checkpoint beside OUT (same disk, big enough, renames).
  near = None if remote else os.fspath(target.parent)
  scratch = tempfile.mkdtemp(prefix=f".{target.name}.scratch-", dir=near)
  if remote:
    staging = fs.path(tempfile.mkdtemp(prefix="checkpoint-extra-"))
  else:  # mkdir (not mkdtemp's 0700) so the published folder has the user's umask permissions
    staging = _sibling(target, "partial")
    staging.mkdir()
  try:
    tree = DiskTree(scratch, DTYPES[dtype])
    config = dict(build(tree), param_dtype=dtype)
    result = extra(os.fspath(staging)) if extra is not None else None
    if remote:  # extra files, then params, then config.json
      for name in fs.listdir(staging):
        fs.atomic_write_bytes(fs.join(target, name), fs.read_bytes(fs.join(staging, name)))
      _save(os.fspath(target), tree, config)
    else:
      _save(os.fspath(staging), tree, config)
      _publish(staging, target)
    return result
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(os.fspath(staging), ignore_errors=True)


def _publish(staging, target) -> None:
  """Renames the finished `staging` folder to `target`; an old checkpoint (or empty folder) at
  `target` is renamed aside first and removed only once the new one is in place."""
  if not target.exists():
    staging.rename(target)
    return
  check_output(os.fspath(target))  # still ours: nothing was put there while we converted
  aside = _sibling(target, "old")
  target.rename(aside)
  try:
    staging.rename(target)
  except BaseException:
    aside.rename(target)
    raise
  shutil.rmtree(os.fspath(aside))


def read_params(path: str, abstract: Mapping | None = None) -> dict:
  """Restores OUT/params. With `abstract` (a tree of jax.ShapeDtypeStruct with shardings), the
  arrays land directly on those devices/shardings; otherwise as host numpy arrays."""
  import orbax.checkpoint as ocp
  params_dir = fs.join(path, PARAMS)
  if not fs.isdir(params_dir):
    raise CheckpointError(f"{path}: no params/ folder (is this a converted checkpoint?)")
  with ocp.StandardCheckpointer() as ckptr:
    if abstract is None:
      meta = ckptr.metadata(params_dir)
      tree = getattr(meta, "item_metadata", meta)
      import jax
      abstract = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), tree)
    return ckptr.restore(params_dir, abstract)
