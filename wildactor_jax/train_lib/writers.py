"""Where metrics go: clu's default writer (logging + TensorBoard summaries) and W/metrics.jsonl,
plus clu's ReportProgress and Profile hooks. (clu.metric_writers imports TensorFlow and needs
the `tensorboard` package; both are base dependencies in setup.py.)
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

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


def copy_grown(local: str, workdir: str, copied: dict[str, int]) -> None:
  """Copies the files below the local folder `local` that are new or changed size since the last
  call (`copied`: relative path -> size) to the same relative paths under `workdir`, through fs."""
  for root, _, files in os.walk(local):
    for name in files:
      full = os.path.join(root, name)
      rel = os.path.relpath(full, local).replace(os.sep, "/")
      size = os.path.getsize(full)
      if copied.get(rel) != size:
        fs.put_file(full, fs.join(workdir, rel))
        copied[rel] = size


class StagedSummaries:
  """clu's default writer for a workdir in an object store: TensorBoard event files are written
  to a local folder, and each flush copies those that grew to the workdir through `fs`.

  Left to itself, TensorFlow would open gs:// with its own GCS client, outside `fs` and the
  backend it is configured with. An object cannot be appended to, so each copy rewrites the
  whole event file, as TensorFlow's GCS writer does on every flush; events after the last
  flush are lost in a crash, like the trainer's other logs.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.local = tempfile.mkdtemp(prefix="wildactor-summaries-")
    self.writer = metric_writers.create_default_writer(self.local)
    self.copied: dict[str, int] = {}

  def __getattr__(self, name):  # write_scalars, write_images, ...: clu's writer
    return getattr(self.writer, name)

  def _copy(self) -> None:
    copy_grown(self.local, self.workdir, self.copied)

  def flush(self) -> None:
    self.writer.flush()
    self._copy()

  def close(self) -> None:
    self.writer.close()
    self._copy()
    shutil.rmtree(self.local, ignore_errors=True)


class StagedProfile(periodic_actions.Profile):
  """clu's Profile hook for a workdir in an object store: the trace goes to a local folder (the
  profiler would otherwise write gs:// with TensorFlow's own GCS client, outside `fs`), and each
  finished trace is copied to the workdir through `fs`, at the same relative paths
  (plugins/profile/RUN/...) that TensorBoard's profile plugin reads."""

  def __init__(self, *, workdir: str, **kwargs):
    self.workdir = workdir
    self.local = tempfile.mkdtemp(prefix="wildactor-profile-")
    self.copied: dict[str, int] = {}
    super().__init__(logdir=self.local, **kwargs)

  def _end_session(self, url):
    super()._end_session(url)
    copy_grown(self.local, self.workdir, self.copied)
    shutil.rmtree(self.local, ignore_errors=True)  # copied: local disk holds one trace at most
    os.makedirs(self.local, exist_ok=True)


def create_writer(workdir: str):
  """Every process logs; process 0 also writes TensorBoard summaries and W/metrics.jsonl."""
  chief = jax.process_index() == 0
  if chief and fs.is_remote(workdir):
    writers = [StagedSummaries(workdir)]
  else:
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
    kwargs = dict(num_profile_steps=profile_steps, first_profile=first_profile)
    hooks.append(StagedProfile(workdir=workdir, **kwargs) if fs.is_remote(workdir)
                 else periodic_actions.Profile(logdir=workdir, **kwargs))
  return hooks
