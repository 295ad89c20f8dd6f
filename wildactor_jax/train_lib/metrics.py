"""Training metrics: the clu writer, throughput/MFU over a logging window, device memory, and
the per-step loss log (one JSON line per step, the record the exact-resume test compares).
"""
from __future__ import annotations

import json
import time

import jax
import numpy as np

from wildactor_jax import flops as flops_lib, fs

LOSS_LOG = "losses.jsonl"


def hbm_in_use() -> dict[str, float]:
  """Bytes in use / peak / limit on this process's devices, where the backend reports them
  (TPU and GPU do; CPU returns nothing). Max over local devices, in GiB."""
  stats = [d.memory_stats() for d in jax.local_devices()]
  stats = [s for s in stats if s]
  if not stats:
    return {}
  gib = lambda key: max(s.get(key, 0) for s in stats) / 2**30
  out = {"hbm_in_use_gib": gib("bytes_in_use"), "hbm_peak_gib": gib("peak_bytes_in_use")}
  if any("bytes_limit" in s for s in stats):
    out["hbm_limit_gib"] = gib("bytes_limit")
  return out


class Throughput:
  """Steps/s, tokens/s and TFLOP/s per device, and MFU, over the steps since the last report."""

  def __init__(self, config, start_step: int, shapes: dict | None = None):
    """shapes: per-example shapes of the real batches (the records may differ from the config)."""
    self.flops = flops_lib.step_flops_for_config(config, shapes).train
    self.tokens = flops_lib.tokens_per_step(config, shapes)
    self.devices = jax.device_count()
    self.kind = jax.devices()[0].device_kind
    self.step, self.time = start_step, time.perf_counter()

  def restart(self, step: int) -> None:
    """Restarts the window (after compilation, evaluation or a checkpoint wait)."""
    self.step, self.time = step, time.perf_counter()

  def report(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    steps, seconds = step - self.step, now - self.time
    self.step, self.time = step, now
    if steps <= 0 or seconds <= 0:
      return {}
    per_step = seconds / steps
    util = flops_lib.mfu(self.flops, per_step, self.devices, self.kind)
    out = {"steps_per_sec": 1.0 / per_step,
           "tokens_per_sec_per_device": self.tokens / per_step / self.devices,
           "tflops_per_device": util["tflops_per_device"]}
    if util["mfu"] is not None:
      out["mfu"] = util["mfu"]
    return out


class JsonLines:
  """A JSON-lines file that grows by appends. Locally each line is appended and flushed at once
  (a kill loses nothing written). An object store (gs://) cannot append: there the lines are
  held in memory and the file rewritten whole, atomically, at each flush() (the trainer flushes
  at every log and checkpoint step)."""

  def __init__(self, path: str, lines: list[str] | None = None):
    """lines: the file's content to start from (rewritten now); None: keep what is there."""
    self.path = path
    self.remote = fs.is_remote(path)
    if lines is None:
      lines = fs.read_text(path).splitlines(keepends=True) if fs.exists(path) else []
      lines = [l if l.endswith("\n") else l + "\n" for l in lines]  # a line cut by a kill
    self.lines = lines if self.remote else None
    fs.atomic_write_text(path, "".join(lines))
    self.file = None if self.remote else open(fs.local_path(path, "log file"), "a")

  def write(self, entry: dict) -> None:
    line = json.dumps(entry) + "\n"
    if self.remote:
      self.lines.append(line)
    else:
      self.file.write(line)
      self.file.flush()

  def flush(self) -> None:
    if self.remote:
      fs.atomic_write_text(self.path, "".join(self.lines))

  def close(self) -> None:
    self.flush()
    if self.file is not None:
      self.file.close()


class LossLog:
  """Appends {"step", "loss"} per step (process 0). On resume it first drops the entries after
  the restored step (a killed run may have logged steps that its checkpoint does not include)."""

  def __init__(self, workdir: str, restored_step: int):
    self.path = fs.join(workdir, LOSS_LOG)
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    kept = []
    if fs.exists(self.path):
      for line in fs.read_text(self.path).splitlines():
        try:
          entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
          continue
        if entry["step"] <= restored_step:
          kept.append(line + "\n")
    self.log = JsonLines(self.path, kept)

  def write(self, step: int, loss: float) -> None:
    if self.enabled:
      # float32 -> Python float is exact, and repr round-trips: the log is bit-exact.
      self.log.write({"step": int(step), "loss": float(np.float32(loss))})

  def flush(self) -> None:
    if self.enabled:
      self.log.flush()

  def close(self) -> None:
    if self.enabled:
      self.log.close()


def read_loss_log(workdir: str) -> list[dict]:
  return [json.loads(line) for line in fs.read_text(fs.join(workdir, LOSS_LOG)).splitlines()]
