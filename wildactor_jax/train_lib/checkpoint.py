"""Checkpoints of a run: the trained parameters, the rest of the train state, the data iterator
and what the frozen weights were.

    <workdir>/checkpoints/<step>/{params, train, data, meta}

`params` is what was trained (LoRA, or every weight with train.trainable="all") as Orbax arrays,
on its own so that inference restores it without building an optimiser; `train` is the rest of
the train state (step, optimiser moments, RNG). Both restore straight onto the current mesh's
shardings (any device count). `data` is the Grain iterator state (one file per process, so a
restore needs the same process count); `meta` records the model config and the frozen backbone
by content hash (or by random-init seed), checked on resume: LoRA weights trained against one
backbone are meaningless on another. Checkpoints written before `params` existed hold the
parameters inside `train`; they still restore.

Saves are asynchronous and only a finalised step directory counts (Orbax renames a temporary
directory when a save completes), so a crash mid-save leaves the previous checkpoint as the
latest. Errors of a background save are raised at the next save, at `check()` and at `close()`.
A finalised step can still be damaged afterwards (a file lost or cut short on the way to or
from a bucket): `restore_newest_good` then falls back to the newest step that restores, moving
(never deleting) the damaged ones aside when asked.
"""
from __future__ import annotations

import logging as py_logging
import os
import sys
from typing import Callable

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

from wildactor_jax import fs
from wildactor_jax.models.loading import backbone_hash

ITEMS = ("params", "train", "data", "meta")
DAMAGED = "damaged_checkpoints"  # beside checkpoints/: where damaged steps are moved


class RunError(ValueError):
  """A one-line, user-facing reason a run's workdir or checkpoint cannot be used."""


class BackboneMismatchError(RunError):
  pass


def backbone_record(config) -> dict:
  """What the frozen weights are: a converted checkpoint (content hash + where it was) or
  random init."""
  path = config.get("backbone_path", "") or ""
  if path:
    return {"kind": "checkpoint", "path": path, "hash": backbone_hash(path)}
  return {"kind": "random", "seed": int(config.train.seed)}


def check_backbone(saved: dict, current: dict, directory: str) -> None:
  """A resume must use the frozen weights the checkpoint was trained against. Identity is the
  content (hash, or random-init seed), not the path: a backbone copied or moved (e.g. to a
  bucket) is the same backbone."""
  saved = saved.get("backbone", {})
  identity = lambda r: {k: v for k, v in r.items() if k != "path"}
  if identity(saved) != identity(current):
    raise BackboneMismatchError(
        f"{directory}: checkpoint was trained on backbone {saved}, this run has {current}; "
        "point config.backbone_path at the same converted checkpoint or use a new workdir")
  if saved.get("path") != current.get("path"):
    logging.info("backbone %s (hash %s) now read from %s", saved.get("path"), current.get("hash"),
                 current.get("path"))


def metadata(config, step: int, mesh_shape: dict) -> dict:
  return {"step": int(step), "backbone": backbone_record(config),
          "model": config.model.to_dict(), "mesh": {k: int(v) for k, v in mesh_shape.items()},
          "process_count": jax.process_count()}


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:200] if text else ''}"


class _FailedReadNoise:
  """Keeps what Orbax and tensorstore print after a failed read off the user's console.

  When one array of a step fails to read, Orbax abandons its other reads: their coroutines are
  closed or cancelled mid-read, and Orbax's `except BaseException` in each turns that into a new
  exception that nobody awaits ("Exception ignored in: <coroutine ...>", "Task exception was
  never retrieved"), and tensorstore reads still in flight call back into Orbax's event loop
  after it closed ("Event loop is closed"). Python prints each with a traceback, at a moment of
  the garbage collector's choosing: one damaged step gave 3 to 99 of them (up to thousands of
  lines) around the one-line warning that names it, some of them before the failed restore has
  even returned to us. Once a restore of ours has begun in this process (`arm`), such reports
  (those whose traceback runs through Orbax or tensorstore) go to the debug log; nothing is
  filtered before that, and every other unraisable exception or asyncio error is printed as
  before."""

  armed = False
  installed = False

  @classmethod
  def arm(cls) -> None:
    cls.armed = True
    if cls.installed:
      return
    cls.installed = True
    default = sys.unraisablehook

    def hook(unraisable):
      if cls.is_noise(unraisable.exc_value, unraisable.object):
        logging.debug("ignored after a failed checkpoint read: %r", unraisable.exc_value)
        return
      default(unraisable)

    sys.unraisablehook = hook
    py_logging.getLogger("asyncio").addFilter(cls._asyncio_filter)

  @classmethod
  def _asyncio_filter(cls, record) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    if error is not None and cls.is_noise(error, None):
      logging.debug("ignored after a failed checkpoint read: %s: %r",
                    record.getMessage().splitlines()[0], error)
      return False
    return True

  @classmethod
  def is_noise(cls, error, obj) -> bool:
    if not cls.armed or error is None:
      return False
    if isinstance(error, RuntimeError) and "Event loop is closed" in str(error):
      return True
    code = getattr(obj, "cr_code", None)
    files = [code.co_filename] if code is not None else []
    tb = error.__traceback__
    while tb is not None:
      files.append(tb.tb_frame.f_code.co_filename)
      tb = tb.tb_next
    return any(f.startswith(_checkpoint_libraries()) for f in files)


def _checkpoint_libraries() -> tuple[str, ...]:
  import tensorstore
  return tuple(os.path.dirname(m.__file__) + os.sep for m in (ocp, tensorstore))


class Checkpointer:
  """An Orbax CheckpointManager over `<workdir>/checkpoints` keeping the newest `keep` steps.

  read_only: for inference on a workdir that may still be training: nothing is created, saved,
  deleted or cleaned up."""

  def __init__(self, workdir: str, keep: int = 3, *, async_save: bool = True,
               read_only: bool = False):
    self.workdir = fs.join(workdir)
    self.directory = fs.join(workdir, "checkpoints")  # a gs:// URI stays one, unchanged
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else int(keep), create=not read_only,
        enable_async_checkpointing=async_save and not read_only,
        cleanup_tmp_directories=not read_only, read_only=read_only)
    self.manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def step_dir(self, step: int) -> str:
    return fs.join(self.directory, str(step))

  def save(self, step: int, train_state: dict, data_iter, meta: dict) -> None:
    """Starts an async save of a (checked, finite) state; the iterator state is captured now."""
    rest = {k: v for k, v in train_state.items() if k != "lora"}
    args = {"params": ocp.args.StandardSave(train_state["lora"]),
            "train": ocp.args.StandardSave(rest), "meta": ocp.args.JsonSave(meta)}
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)
    self.check()

  def _has_params_item(self, step: int) -> bool:
    return fs.exists(fs.join(self.step_dir(step), "params"))

  def restore(self, step: int, abstract_train: dict, data_iter=None) -> tuple[dict, dict]:
    """(train state on the shardings of `abstract_train`, meta); sets `data_iter`'s state."""
    split = self._has_params_item(step)
    rest = {k: v for k, v in abstract_train.items() if k != "lora"}
    args = {"train": ocp.args.StandardRestore(rest if split else abstract_train),
            "meta": ocp.args.JsonRestore()}
    if split:
      args["params"] = ocp.args.StandardRestore(abstract_train["lora"])
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    state = dict(restored["train"])
    if split:
      state["lora"] = restored["params"]
    return state, restored["meta"]

  def restore_params(self, step: int, abstract_params, legacy_abstract_train: Callable[[], dict]):
    """The trained parameters alone, on the shardings of `abstract_params`. A checkpoint from
    before the `params` item holds them inside `train`, which only restores whole:
    `legacy_abstract_train()` gives that tree (it needs the optimiser's structure)."""
    if self._has_params_item(step):
      restored = self.manager.restore(
          step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params)))
      return restored["params"]
    restored = self.manager.restore(
        step, args=ocp.args.Composite(train=ocp.args.StandardRestore(legacy_abstract_train())))
    return restored["train"]["lora"]

  def read_meta(self, step: int) -> dict:
    """The `meta` item alone (model config, backbone record) without touching the arrays."""
    restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return restored["meta"]

  def restore_newest_good(self, restore_step: Callable[[int], object], *,
                          steps: list[int] | None = None, move_damaged: bool = False):
    """(step, restore_step(step)) for the newest step that restores; None if there are no
    steps. A step whose restore fails (a file missing or cut short) is named in a warning; with
    move_damaged, once an older step has restored, the damaged newer ones are moved to
    <workdir>/damaged_checkpoints/ (never deleted), so that the resumed run can save those steps
    again. If no step restores, nothing is moved (the failure may not be damage: the same error
    on every step suggests the environment) and the error is one line. A RunError from
    `restore_step` (a mismatch, not damage) propagates. On several processes every one must
    see the same damage (they read one shared file system or bucket), or they would disagree
    about the step."""
    steps = sorted(self.all_steps() if steps is None else steps, reverse=True)
    if not steps:
      return None
    damaged = []
    # Before the first read, not after a failure: the abandoned reads' reports can be printed
    # while the failure is still on its way out of Orbax.
    _FailedReadNoise.arm()
    for step in steps:
      try:
        result = restore_step(step)
      except RunError:
        raise
      except Exception as e:  # tensorstore/Orbax/Grain report damage with assorted types
        logging.warning("checkpoint %s is damaged (%s); trying an older one",
                        self.step_dir(step), _first_line(e))
        damaged.append((step, e))
        continue
      if move_damaged:
        for bad, _ in damaged:
          self._move_aside(bad)
      return step, result
    step, error = damaged[0]
    raise RunError(f"{self.directory}: no checkpoint restores (newest, {self.step_dir(step)}: "
                   f"{_first_line(error)}); nothing was changed")

  def _move_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      target_dir = fs.makedirs(fs.join(self.workdir, DAMAGED))
      target, n = target_dir / str(step), 0
      while target.exists():
        n += 1
        target = target_dir / f"{step}-{n}"
      fs.path(self.step_dir(step)).rename(target)
      logging.warning("moved damaged checkpoint %s to %s (kept, not deleted)",
                      self.step_dir(step), target)
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes(f"wildactor_move_damaged_{step}")
    self.manager.reload()

  def check(self) -> None:
    """Raises the error of any failed background save (Orbax would otherwise only log it)."""
    self.manager.check_for_errors()

  def wait(self) -> None:
    self.manager.wait_until_finished()
    self.check()

  def close(self) -> None:
    self.wait()
    self.manager.close()
