"""Fault injection for the training tests, from outside the training loop.

`FaultySource` wraps the data source handed to `train_and_evaluate`: it poisons one batch with NaN
(the non-finite guard must stop the run) or slows batches down (so a test can SIGKILL a trainer
mid-run at a known point). It is checkpointable like the Grain iterator it wraps, and counts the
batches it has served, so a resumed run knows which step it is at.

Run as a script it is the trainer CLI with a slow source, for the SIGKILL tests (one process, and
a multi-process job started with the launchers' JAX_* variables); with --distill, the few-step
distillation CLI (python -m wildactor_jax.distill) instead:

    python tests/faults.py [--distill] --config C --workdir W --slow_from_step 4 --delay_s 1 \
        [--config.x=v]

and with slow checkpoint storage (`slow_checkpoint_reads`: read i of an array shard waits
i x --slow_reads_s first, as reads from a bucket straggle), so that when one read of a damaged
step fails, the others are still in flight, deterministically: what Orbax then leaves behind
is what a user sees on slow storage.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FaultySource:
  """Batches of `inner`; NaN in the batch of step `nan_at_step` (1-based; its `nan_key`, video
  latents by default); a sleep of `delay_s` before each batch from step `slow_from_step` on."""

  def __init__(self, inner, nan_at_step: int = -1, slow_from_step: int = -1, delay_s: float = 0.0,
               nan_key: str = "video_latents"):
    self.inner, self.nan_at_step, self.nan_key = inner, nan_at_step, nan_key
    self.slow_from_step, self.delay_s = slow_from_step, delay_s
    self.taken = 0

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self.inner)
    self.taken += 1
    if 0 <= self.slow_from_step <= self.taken:
      time.sleep(self.delay_s)
    if self.taken == self.nan_at_step:
      batch = dict(batch, **{self.nan_key: np.full_like(batch[self.nan_key], np.nan)})
    return batch

  # Grain's checkpoint handler stores a non-DatasetIterator's state as bytes.
  def get_state(self) -> bytes:
    return json.dumps({"inner": self.inner.get_state(), "taken": self.taken}).encode()

  def set_state(self, state: bytes) -> None:
    state = json.loads(state)
    if "inner" not in state:  # saved by a run of the plain source: counting starts here
      state = {"inner": state, "taken": 0}
    self.inner.set_state(state["inner"])
    self.taken = state["taken"]

  def start_prefetch(self) -> None:
    if hasattr(self.inner, "start_prefetch"):
      self.inner.start_prefetch()


def wait_for_logged_step(proc, workdir, step: int, timeout: float = 180) -> None:
  """Returns once the run `proc` writes to `workdir` has logged `step` steps (its per-step loss
  log); an AssertionError, with the run's stderr when it is a pipe, if it ends or stalls first."""
  from wildactor_jax.train_lib import metrics as metrics_lib
  log = os.path.join(str(workdir), metrics_lib.LOSS_LOG)
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(log) and len(open(log).read().splitlines()) >= step:
      return
    time.sleep(0.05)
  err = proc.stderr.read()[-3000:] if proc.stderr is not None else ""
  raise AssertionError(f"the run ended or stalled before step {step}: {err}")


def slow_checkpoint_reads(delay_s: float, cap_s: float = 0.5) -> None:
  """Delays Orbax's reads of array shards: read i waits min(i x delay_s, cap_s) first."""
  import asyncio
  import itertools
  from orbax.checkpoint._src.serialization import serialization
  inner, count = serialization._read_shard, itertools.count()

  async def slow_read_shard(*args, **kwargs):
    await asyncio.sleep(min(next(count) * delay_s, cap_s))
    return await inner(*args, **kwargs)

  serialization._read_shard = slow_read_shard


def _main(argv):
  from absl import flags
  from wildactor_jax import train
  from wildactor_jax.input import batches
  if flags.FLAGS.slow_reads_s > 0:
    slow_checkpoint_reads(flags.FLAGS.slow_reads_s)
  # The trainer's own main (multi-process set-up, exit statuses), with the slowed source.
  train.main(argv, make_train_source=lambda config: FaultySource(
      batches.create_source(config, "train"), slow_from_step=flags.FLAGS.slow_from_step,
      delay_s=flags.FLAGS.delay_s))


def _main_distill(argv):
  from absl import flags
  from wildactor_jax.distill import __main__ as distill_cli
  from wildactor_jax.input import batches
  distill_cli.main(argv, make_train_source=lambda run_config: FaultySource(
      batches.create_source(run_config, "train"), slow_from_step=flags.FLAGS.slow_from_step,
      delay_s=flags.FLAGS.delay_s))


if __name__ == "__main__":
  from absl import flags
  flags.DEFINE_integer("slow_from_step", -1, "sleep before each batch from this step on")
  flags.DEFINE_float("delay_s", 0.0, "seconds to sleep per slowed batch")
  flags.DEFINE_float("slow_reads_s", 0.0, "checkpoint read i waits i x this first")
  from wildactor_jax import cli
  if "--distill" in sys.argv:
    sys.argv.remove("--distill")
    from wildactor_jax.distill import __main__ as distill_cli  # defines --config / --workdir
    cli.run_absl(_main_distill, flags_parser=distill_cli.parse_flags)
  else:
    import wildactor_jax.train  # noqa: F401  (defines --config / --workdir)
    cli.run_absl(_main)
