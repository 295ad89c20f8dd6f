"""Training metrics: the clu writer, throughput/MFU over a logging window, device memory, and
the per-step loss log (one JSON line per step, the record the exact-resume test compares).
"""
from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from wildactor_jax import flops as flops_lib

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


def _atomic_write(path: str, text: str) -> None:
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class LossLog:
  """Appends {"step", "loss"} per step (process 0). On resume it first drops the entries after
  the restored step (a killed run may have logged steps that its checkpoint does not include)."""

  def __init__(self, workdir: str, restored_step: int):
    self.path = os.path.join(workdir, LOSS_LOG)
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    kept = []
    if os.path.exists(self.path):
      with open(self.path) as f:
        for line in f:
          try:
            entry = json.loads(line)
          except json.JSONDecodeError:  # a line cut short by a kill
            continue
          if entry["step"] <= restored_step:
            kept.append(line if line.endswith("\n") else line + "\n")
    _atomic_write(self.path, "".join(kept))
    self.file = open(self.path, "a")

  def write(self, step: int, loss: float) -> None:
    if self.enabled:
      # float32 -> Python float is exact, and repr round-trips: the log is bit-exact.
      self.file.write(json.dumps({"step": int(step), "loss": float(np.float32(loss))}) + "\n")
      self.file.flush()

  def close(self) -> None:
    if self.enabled:
      self.file.close()


def read_loss_log(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, LOSS_LOG)) as f:
    return [json.loads(line) for line in f]
