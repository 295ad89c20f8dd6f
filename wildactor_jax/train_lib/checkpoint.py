"""Checkpoints of a run: the train state, the data iterator and what the frozen weights were.

    <workdir>/checkpoints/<step>/{train, data, meta}

`train` is the train state (LoRA, optimiser, step, RNG) as Orbax arrays, restored straight onto
the current mesh's shardings (any device count); `data` is the Grain iterator state (one file per
process, so a restore needs the same process count); `meta` records the frozen backbone by path
and content hash (or by random-init seed), checked on resume: LoRA weights trained against one
backbone are meaningless on another.

Saves are asynchronous and only a finalised step directory counts (Orbax renames a temporary
directory when a save completes), so a crash mid-save leaves the previous checkpoint as the
latest. Errors of a background save are raised at the next save, at `check()` and at `close()`.
"""
from __future__ import annotations

import os

import grain
import jax
import orbax.checkpoint as ocp

from wildactor_jax.models.loading import backbone_hash

ITEMS = ("train", "data", "meta")


class BackboneMismatchError(RuntimeError):
  pass


def backbone_record(config) -> dict:
  """What the frozen weights are: a converted checkpoint (path + content hash) or random init."""
  path = config.get("backbone_path", "") or ""
  if path:
    return {"kind": "checkpoint", "path": path, "hash": backbone_hash(path)}
  return {"kind": "random", "seed": int(config.train.seed)}


class Checkpointer:
  """An Orbax CheckpointManager over `<workdir>/checkpoints` keeping the newest `keep` steps."""

  def __init__(self, workdir: str, keep: int, *, async_save: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=int(keep), create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, train_state: dict, data_iter, meta: dict) -> None:
    """Starts an async save of a (checked, finite) state; the iterator state is captured now."""
    args = {"train": ocp.args.StandardSave(train_state), "meta": ocp.args.JsonSave(meta)}
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)
    self.check()

  def restore(self, step: int, abstract_train: dict, data_iter=None) -> tuple[dict, dict]:
    """(train state on the shardings of `abstract_train`, meta); sets `data_iter`'s state."""
    args = {"train": ocp.args.StandardRestore(abstract_train), "meta": ocp.args.JsonRestore()}
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    return restored["train"], restored["meta"]

  def read_meta(self, step: int) -> dict:
    """The `meta` item alone (model config, backbone record) without touching the arrays."""
    restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return restored["meta"]

  def check(self) -> None:
    """Raises the error of any failed background save (Orbax would otherwise only log it)."""
    self.manager.check_for_errors()

  def wait(self) -> None:
    self.manager.wait_until_finished()
    self.check()

  def close(self) -> None:
    self.wait()
    self.manager.close()


def check_backbone(saved: dict, current: dict, directory: str) -> None:
  """A resume must use the frozen weights the checkpoint was trained against."""
  saved = saved.get("backbone", {})
  if saved != current:
    raise BackboneMismatchError(
        f"{directory}: checkpoint was trained on backbone {saved}, this run has {current}; "
        "point config.backbone_path at the same converted checkpoint or use a new workdir")


def metadata(config, step: int, mesh_shape: dict) -> dict:
  return {"step": int(step), "backbone": backbone_record(config),
          "model": config.model.to_dict(), "mesh": {k: int(v) for k, v in mesh_shape.items()},
          "process_count": jax.process_count()}
