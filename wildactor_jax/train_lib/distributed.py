"""Process-level set-up: multi-host initialisation, device layout logging, preemption notice."""
from __future__ import annotations

import os
import signal

import jax
from absl import logging

# Environment variables that mean "this is one process of a multi-process job".
_MULTI_PROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")


def needs_distributed() -> bool:
  if any(os.environ.get(k) for k in _MULTI_PROCESS_ENV):
    return True
  if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):  # a multi-host TPU slice
    return True
  if os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):  # multi-slice TPU
    return True
  for key in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if int(os.environ.get(key, "1") or 1) > 1:
      return True
  return False


def maybe_initialize() -> None:
  """jax.distributed.initialize() when the environment describes a multi-process job. It
  auto-detects coordinator, process count and id on TPU, SLURM and Open MPI; a plain list of
  hosts (launch/gpu_multinode.sh --hosts) passes them as JAX_NUM_PROCESSES / JAX_PROCESS_ID,
  which jax itself does not read."""
  if not needs_distributed():
    return
  kwargs = {}
  if os.environ.get("JAX_NUM_PROCESSES") and os.environ.get("JAX_PROCESS_ID"):
    kwargs = {"num_processes": int(os.environ["JAX_NUM_PROCESSES"]),
              "process_id": int(os.environ["JAX_PROCESS_ID"])}
  jax.distributed.initialize(**kwargs)


def log_layout(mesh) -> dict:
  layout = {"process": jax.process_index(), "process_count": jax.process_count(),
            "local_devices": jax.local_device_count(), "devices": jax.device_count(),
            "device_kind": jax.devices()[0].device_kind, "backend": jax.default_backend(),
            "mesh": dict(mesh.shape)}
  logging.info("device layout: %s", layout)
  return layout


class PreemptionWatcher:
  """True at the step where the run should checkpoint and stop.

  One process: a SIGTERM sets a flag, acted on after the current step. Several processes: JAX's
  preemption sync point (every process reaches the same step), since hosts receive SIGTERM at
  different times and acting on a local flag could make them disagree about saving.
  """

  def __init__(self, manager):
    self.manager = manager
    self.flag = False
    self.previous = None
    if jax.process_count() == 1:
      self.previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    logging.warning("SIGTERM: checkpointing after the current step and stopping")
    self.flag = True

  def reached(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self.flag
    return self.manager.reached_preemption(step)

  def close(self) -> None:
    if self.previous is not None:
      signal.signal(signal.SIGTERM, self.previous)
