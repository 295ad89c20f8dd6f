"""Where metrics go: clu's default writer (logging + TensorBoard summaries) and W/metrics.jsonl,
plus clu's ReportProgress and Profile hooks. (clu.metric_writers imports TensorFlow and needs
the `tensorboard` package; both are base dependencies in setup.py.)
"""
from __future__ import annotations

import json
import os

import jax

from clu import metric_writers, periodic_actions


def _plain(v):
  return v.item() if hasattr(v, "item") else v


class JsonlWriter:
  """{"step": s, name: value, ...} per write_scalars call, appended to a JSON-lines file."""

  def __init__(self, path: str):
    self.path = path
    self.file = open(path, "a")

  def write_scalars(self, step: int, scalars: dict) -> None:
    self.file.write(json.dumps({"step": int(step), **{k: _plain(v) for k, v in scalars.items()}})
                    + "\n")

  def write_hparams(self, hparams: dict) -> None:
    tmp = os.path.join(os.path.dirname(self.path), f"hparams.json.tmp.{os.getpid()}")
    with open(tmp, "w") as f:
      json.dump({k: _plain(v) for k, v in hparams.items()}, f, indent=1, default=str)
    os.replace(tmp, os.path.join(os.path.dirname(self.path), "hparams.json"))

  def flush(self) -> None:
    self.file.flush()

  def close(self) -> None:
    self.file.close()


class Writers:
  """Fans each call out to several writers."""

  def __init__(self, writers):
    self.writers = list(writers)

  def __getattr__(self, name):
    return lambda *args: [getattr(w, name)(*args) for w in self.writers] and None


def create_writer(workdir: str):
  """Every process logs; process 0 also writes TensorBoard summaries and W/metrics.jsonl."""
  chief = jax.process_index() == 0
  writers = [metric_writers.create_default_writer(workdir, just_logging=not chief)]
  if chief:
    writers.append(JsonlWriter(os.path.join(workdir, "metrics.jsonl")))
  return Writers(writers)


def progress_hooks(workdir: str, num_train_steps: int, writer, profile_steps: int,
                   first_profile: int) -> list:
  """ReportProgress on every process; a profile window on process 0 if profile_steps > 0."""
  hooks = [periodic_actions.ReportProgress(num_train_steps=num_train_steps,
                                           writer=writer.writers[0])]
  if jax.process_index() == 0 and profile_steps > 0:
    hooks.append(periodic_actions.Profile(logdir=workdir, num_profile_steps=profile_steps,
                                          first_profile=first_profile))
  return hooks
