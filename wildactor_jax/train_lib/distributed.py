"""Process-level set-up: multi-host initialisation, device layout logging, preemption notice,
and ending a multi-process job promptly when one of its processes fails.

A multi-process job is started by the launchers (launch/*.sh) with JAX_COORDINATOR_ADDRESS
(host:port of process 0), and, where no cluster is detected, JAX_NUM_PROCESSES and
JAX_PROCESS_ID. On CPU the cross-process collectives are gloo (jax 0.10's default,
jax_cpu_collectives_implementation); tests/test_multihost.py runs the trainer as 2 processes of
4 CPU devices on localhost that way.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback

import jax
from absl import logging

from wildactor_jax import cli

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


@contextlib.contextmanager
def fail_fast():
  """In a multi-process job, an error ends this process at once (status 1, or the SystemExit's
  non-zero status), the error printed first.

  JAX's exit handler would otherwise wait at the distributed shutdown barrier for every other
  process, which never comes when one has died (the usual cause: the peer was killed or
  preempted, and this process's next collective failed with "Connection closed by peer"); it
  then aborts only after the heartbeat timeout, with a core dump. Exiting at once also takes
  down the coordinator (process 0), so the processes still running stop at their next
  collective or coordination call instead of waiting on it. The caller's `finally` blocks have
  run by then (the trainer waits for its in-flight checkpoint saves there). One process: a no-op.
  """
  try:
    yield
  except SystemExit as e:
    if jax.distributed.is_initialized() and e.code not in (0, None):
      cli.exit_now(e.code if isinstance(e.code, int) else 1)
    raise
  except BaseException:
    if not jax.distributed.is_initialized():
      raise
    traceback.print_exc()
    print(f"error: process {jax.process_index()} of {jax.process_count()} failed (above) and "
          "stops now; the other processes stop at their next collective. Restart all of them: "
          "they resume from the newest checkpoint", file=sys.stderr, flush=True)
    cli.exit_now(1)


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
