"""What a run keeps in its workdir besides checkpoints: the trainer's lock and config.json.

The lock (<workdir>/trainer.lock, JSON {pid, host, started}) stops a second trainer from
interleaving logs and overwriting checkpoints of the first. Locally it is created with O_EXCL,
which is atomic; a lock left by a killed trainer (same host, pid no longer alive) is stale and
taken over. Object stores (gs://) have no atomic create through this layer: there the lock is
advisory (two trainers started within the same second can both pass the check), and the log
says so.

config.json is what `generate` restores a run with, and hparams.json its flat copy for
TensorBoard. A restart compares its whole config with the saved one BEFORE anything is written:
a different model would silently resume (or crash on) weights trained for another architecture,
and another learning rate, schedule length or data would silently make the run something its
records do not say. Any difference is refused with a one-line diff unless the user passes
--allow_config_change; then both files are rewritten together. Fields that only say how the run
is watched and where it runs (RESUME_FREE: logging and evaluation cadence, checkpoint cadence
and retention, the mesh) may change freely, and the backbone's path too: a moved backbone is
checked by its content hash (`checkpoint.check_backbone`).
"""
from __future__ import annotations

import json
import os
import socket
import time

import jax
from absl import logging

from wildactor_jax import fs
from wildactor_jax.train_lib.checkpoint import RunError

LOCK = "trainer.lock"
CONFIG = "config.json"


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


class WorkdirLock:
  """`with WorkdirLock(workdir):` holds the workdir for one trainer (process 0 of a job)."""

  def __init__(self, workdir: str):
    self.path = fs.join(workdir, LOCK)
    self.workdir = workdir
    self.record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    self.held = False

  def _refuse_or_clear(self, other: dict) -> None:
    """Raises if `other` may still be running; returns if its lock is stale (and removed)."""
    who = f"pid {other.get('pid')} on host {other.get('host')}"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(other.get("started", 0)))
    same_host = other.get("host") == self.record["host"]
    if same_host and isinstance(other.get("pid"), int) and not _alive(other["pid"]):
      logging.warning("%s: stale lock of %s (no such process); taking it over", self.path, who)
      fs.path(self.path).unlink()
      return
    where = "" if same_host else " (another host: cannot check it is alive)"
    raise RunError(f"--workdir {self.workdir} is in use by a trainer: {who} since {since}{where}; "
                   f"stop it, or delete {self.path} if it is gone, or use another workdir")

  def acquire(self) -> "WorkdirLock":
    if jax.process_index() != 0:
      return self
    data = json.dumps(self.record).encode()
    if fs.is_remote(self.path):
      logging.warning("%s: a lock on an object store is advisory: two trainers started at the "
                      "same moment can both pass this check", self.path)
      if fs.exists(self.path):
        self._refuse_or_clear(self._read())
      fs.atomic_write_bytes(self.path, data)
      self.held = True
      return self
    fs.makedirs(self.workdir)
    for _ in range(2):  # a second try after clearing a stale lock
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
      except FileExistsError:
        self._refuse_or_clear(self._read())
        continue
      with os.fdopen(fd, "wb") as fh:
        fh.write(data)
      self.held = True
      return self
    raise RunError(f"{self.path}: could not take the workdir lock (another trainer raced us)")

  def _read(self) -> dict:
    try:
      return json.loads(fs.read_text(self.path))
    except (OSError, ValueError):  # being written, or garbage: treat as held by someone
      return {"pid": None, "host": "unknown"}

  def release(self) -> None:
    """Removes the lock if it is still ours (never someone else's)."""
    if self.held and fs.exists(self.path) and self._read() == json.loads(json.dumps(self.record)):
      fs.path(self.path).unlink()
    self.held = False

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def flatten(d: dict, prefix: str = "") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1}"""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


# Config fields a restart may change without --allow_config_change (a name ending in "." is a
# whole section): they change how a run is logged, evaluated, checkpointed and laid out on the
# devices, not what it trains.
RESUME_FREE = ("train.log_every", "train.eval_every", "train.eval_batches",
               "train.profile_steps", "checkpoint.", "mesh.", "backbone_path")


def _resume_free(key: str) -> bool:
  return any(key == f or (f.endswith(".") and key.startswith(f)) for f in RESUME_FREE)


def config_diff(saved: dict, current: dict) -> list[str]:
  """['train.learning_rate: 0.001 -> 0.002', ...] between two whole configs (JSON-normalised),
  leaving out the RESUME_FREE fields."""
  norm = lambda d: flatten(json.loads(json.dumps(d, default=str)))
  a, b = norm(saved), norm(current)
  missing = object()
  return [f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in sorted(set(a) | set(b))
          if not _resume_free(k) and a.get(k, missing) != b.get(k, missing)]


def model_config_diff(saved: dict, current: dict) -> list[str]:
  """['model.lora_rank: 16 -> 32', ...] between two config.model mappings (JSON-normalised, so a
  tuple and the list it was saved as compare equal). A field one side lacks counts as its
  ModelConfig default: a run saved before a field existed has the model that default gives."""
  from wildactor_jax.models.config import ModelConfig
  defaults = ModelConfig().to_dict()
  norm = lambda d: flatten(json.loads(json.dumps({**defaults, **dict(d)}, default=str)), "model.")
  a, b = norm(saved), norm(current)
  missing = object()
  return [f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in sorted(set(a) | set(b))
          if a.get(k, missing) != b.get(k, missing)]


def read_config(workdir: str):
  """The run's saved config (a ConfigDict), or None."""
  from ml_collections import ConfigDict
  path = fs.join(workdir, CONFIG)
  return ConfigDict(fs.read_json(path)) if fs.exists(path) else None


def config_json(config) -> dict:
  """The config as config.json holds it (tuples as lists, what JSON cannot hold as strings)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def check_config(config, saved: dict, where: str, allow_change: bool) -> list[str]:
  """Refuses to resume a run with a config other than its saved one (a one-line diff) unless
  allowed; returns the differences."""
  diff = config_diff(saved, config_json(config))
  if not diff:
    return diff
  shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
  if not allow_change:
    raise RunError(f"{where}: this run's config differs from the saved one ({shown}); "
                   "use a new workdir, or pass --allow_config_change to resume with it")
  logging.warning("%s: resuming with a changed config (%s), as allowed", where, shown)
  return diff


def save_config(config, workdir: str, writer) -> None:
  """workdir/config.json and, through `writer`, hparams.json (its flat copy): both written at
  every start, so that after an allowed change they still agree (process 0, atomically)."""
  if jax.process_index() == 0:
    fs.atomic_write_text(fs.join(workdir, CONFIG),
                         config.to_json_best_effort(indent=2, sort_keys=True))
  writer.write_hparams({k: str(v) if isinstance(v, (tuple, list)) else v
                        for k, v in flatten(config.to_dict()).items()})
