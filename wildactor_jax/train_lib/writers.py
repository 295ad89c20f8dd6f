"""Where metrics go: clu's default writer (logging + TensorBoard summaries) and W/metrics.jsonl,
plus clu's ReportProgress and Profile hooks.

clu.metric_writers (and clu.periodic_actions, which imports it) need the `tensorboard` package.
Where it is not installed we say so once and fall back to the same interface: absl logging, the
JSONL file, a steps/s reporter and a jax.profiler trace window, so training never depends on it.
"""
from __future__ import annotations

import json
import os
import time

import jax
from absl import logging

try:
  from clu import metric_writers, periodic_actions
  CLU_ERROR = None
except ImportError as e:  # clu's TensorBoard summary writer needs `tensorboard`
  metric_writers = periodic_actions = None
  CLU_ERROR = e


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


class LoggingWriter:
  def write_scalars(self, step: int, scalars: dict) -> None:
    logging.info("[%d] %s", step, ", ".join(f"{k}={_plain(v):.6g}" for k, v in scalars.items()))

  def write_hparams(self, hparams: dict) -> None:
    logging.info("hparams: %s", hparams)

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


class Writers:
  """Fans each call out to several writers."""

  def __init__(self, writers):
    self.writers = list(writers)

  def __getattr__(self, name):
    return lambda *args: [getattr(w, name)(*args) for w in self.writers] and None


def create_writer(workdir: str):
  """Every process logs; process 0 also writes TensorBoard summaries and W/metrics.jsonl."""
  chief = jax.process_index() == 0
  if metric_writers is not None:
    writers = [metric_writers.create_default_writer(workdir, just_logging=not chief)]
  else:
    logging.warning("clu.metric_writers unavailable (%s): metrics go to the log and "
                    "metrics.jsonl only, no TensorBoard summaries", CLU_ERROR)
    writers = [LoggingWriter()]
  if chief:
    writers.append(JsonlWriter(os.path.join(workdir, "metrics.jsonl")))
  return Writers(writers)


class _ReportProgress:
  """Logs steps/s and the ETA every `every_secs` (clu's ReportProgress without clu)."""

  def __init__(self, num_train_steps: int, writer, every_secs: float = 60.0):
    self.total, self.writer, self.every = num_train_steps, writer, every_secs
    self.last_step, self.last_time = None, time.time()

  def __call__(self, step: int) -> None:
    now = time.time()
    if self.last_step is None:
      self.last_step, self.last_time = step, now
    elif now - self.last_time >= self.every:
      rate = (step - self.last_step) / (now - self.last_time)
      self.writer.write_scalars(step, {"steps_per_sec": rate})
      logging.info("step %d/%d, %.3g steps/s, ETA %.1f min", step, self.total, rate,
                   (self.total - step) / max(rate, 1e-9) / 60)
      self.last_step, self.last_time = step, now


class _Profile:
  """A jax.profiler trace of `num_steps` steps starting after step `first` (clu's Profile)."""

  def __init__(self, logdir: str, num_steps: int, first: int):
    self.logdir, self.start, self.stop = logdir, first, first + num_steps
    self.active = False

  def __call__(self, step: int) -> None:
    if step == self.start and not self.active:
      jax.profiler.start_trace(self.logdir)
      self.active = True
    elif step >= self.stop and self.active:
      jax.profiler.stop_trace()
      self.active = False
      logging.info("profile of steps %d-%d written to %s", self.start, self.stop, self.logdir)


def progress_hooks(workdir: str, num_train_steps: int, writer, profile_steps: int,
                   first_profile: int) -> list:
  """ReportProgress on every process; a profile window on process 0 if profile_steps > 0."""
  chief = jax.process_index() == 0
  if periodic_actions is not None:
    hooks = [periodic_actions.ReportProgress(num_train_steps=num_train_steps,
                                             writer=writer.writers[0])]
    if chief and profile_steps > 0:
      hooks.append(periodic_actions.Profile(logdir=workdir, num_profile_steps=profile_steps,
                                            first_profile=first_profile))
    return hooks
  hooks = [_ReportProgress(num_train_steps, writer)]
  if chief and profile_steps > 0:
    hooks.append(_Profile(workdir, profile_steps, first_profile))
  return hooks
