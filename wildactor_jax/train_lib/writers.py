"""Where metrics go: clu's default writer (logging + TensorBoard summaries) and W/metrics.jsonl,
plus clu's ReportProgress and Profile hooks. (clu.metric_writers imports TensorFlow and needs
the `tensorboard` package; both are base dependencies in setup.py.)
"""
from __future__ import annotations

import json

import jax

from clu import metric_writers, periodic_actions

from wildactor_jax import fs
from wildactor_jax.train_lib.metrics import JsonLines


def _plain(v):
  return v.item() if hasattr(v, "item") else v


class JsonlWriter:
  """{"step": s, name: value, ...} per write_scalars call, appended to W/metrics.jsonl;
  hparams to W/hparams.json."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.log = JsonLines(fs.join(workdir, "metrics.jsonl"))

  def write_scalars(self, step: int, scalars: dict) -> None:
    self.log.write({"step": int(step), **{k: _plain(v) for k, v in scalars.items()}})

  def write_hparams(self, hparams: dict) -> None:
    fs.atomic_write_text(fs.join(self.workdir, "hparams.json"),
                         json.dumps({k: _plain(v) for k, v in hparams.items()}, indent=1,
                                    default=str))

  def flush(self) -> None:
    self.log.flush()

  def close(self) -> None:
    self.log.close()


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
    writers.append(JsonlWriter(workdir))
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
