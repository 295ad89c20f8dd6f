"""The step loop every trainer runs (`train` for WildActor, `distill` for a few-step student).

    summary = run_steps(step_fn, state, train_iter, checkpointer, cadence, ...)

One jitted step per batch; the host settles each step's metrics while the next one runs on the
device; a step whose metrics are not finite stops the run, saving nothing (the last good
checkpoint stays the newest); checkpoints every `cadence.every` steps, at the end and on a
preemption notice (then the run stops); logged metrics are the means over the steps since the
last log (`learning_rate`-like entries: the last value), with the window's throughput. The
per-step loss log (W/losses.jsonl) is what the exact-resume tests compare.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import numpy as np
from absl import logging

from wildactor_jax.train_lib import distributed, metrics as metrics_lib, writers as writers_lib


class NonFiniteError(FloatingPointError):
  pass


class Cadence(NamedTuple):
  """When the loop does what, in steps (eval_every 0: never)."""
  total_steps: int
  every: int          # checkpoint
  log_every: int
  eval_every: int = 0
  profile_steps: int = 5


def resume_or_start(checkpointer, restore: Callable[[int], dict],
                    fresh: Callable[[], dict]) -> dict:
  """The state of the workdir's newest good checkpoint (restore(step) -> state; a damaged one
  is moved aside and the next newest tried), or fresh() when there is none. The checkpointer is
  closed if restoring fails, so a refused run leaves no save in flight."""
  try:
    found = checkpointer.restore_newest_good(restore, move_damaged=True)
  except BaseException:
    checkpointer.close()
    raise
  if found is None:
    return fresh()
  logging.info("resuming from %s/%d", checkpointer.directory, found[0])
  return found[1]


def window_summary(step: int, window: list[dict]) -> dict:
  """{"step": step, metric: mean over the window} ("finite" left out; a learning rate is the
  window's last value)."""
  out = {"step": step}
  for key in window[0]:
    if key == "finite":
      continue
    values = [float(m[key]) for m in window]
    out[key] = values[-1] if key.endswith("learning_rate") else float(np.mean(values))
  return out


def run_steps(step_fn: Callable, state: dict, train_iter, checkpointer, cadence: Cadence, *,
              workdir: str, start: int, meta: Callable[[int], dict], writer,
              make_throughput: Callable[[int, dict], object],
              evaluate: Callable[[dict], dict] | None = None) -> dict:
  """Runs steps start+1 .. cadence.total_steps; returns the last logged summary.

  step_fn(state, batch) -> (state, metrics with "loss" and "finite", all scalars); train_iter:
  host batches (a checkpointable Grain iterator); meta(step): the checkpoint's meta item;
  make_throughput(step, first batch) -> an object with restart(step) and report(step) -> dict;
  evaluate(state) -> metrics, at cadence.eval_every. The checkpointer is closed on the way out
  (waiting for in-flight saves, raising their errors)."""
  hooks = writers_lib.progress_hooks(workdir, cadence.total_steps, writer, cadence.profile_steps,
                                     start + 10)
  loss_log = metrics_lib.LossLog(workdir, start)
  throughput = None  # built from the first batch's shapes
  watcher = distributed.PreemptionWatcher(checkpointer.manager)
  window: list[dict] = []
  summary: dict = {"step": start}

  def settle(step_done, metrics):
    """Waits for a step's metrics; stops the run (saving nothing) if they are not finite."""
    m = jax.device_get(metrics)
    if not m["finite"]:
      raise NonFiniteError(
          f"step {step_done}: loss {m['loss']} / gradient norm {m.get('grad_norm')} is not "
          f"finite; stopped without saving. Last good checkpoint: step "
          f"{checkpointer.latest_step()} in {checkpointer.directory}")
    loss_log.write(step_done, m["loss"])
    window.append(m)

  pending = None
  step = start
  try:
    while step < cadence.total_steps:
      batch = next(train_iter)
      if throughput is None:
        throughput = make_throughput(step, batch)
      with jax.profiler.StepTraceAnnotation("train", step_num=step + 1):
        state, metrics = step_fn(state, batch)
      step += 1
      # Host work for the previous step overlaps this one's device work.
      if pending is not None:
        settle(*pending)
      pending = (step, metrics)
      if step == start + 1:  # the first step includes compilation: keep it out of throughput
        settle(*pending)
        pending = None
        throughput.restart(step)
      for hook in hooks:
        hook(step)
      preempted = watcher.reached(step)
      save_now = step % cadence.every == 0 or step == cadence.total_steps or preempted
      log_now = step % cadence.log_every == 0 or step == cadence.total_steps
      eval_now = evaluate is not None and cadence.eval_every > 0 and (
          step % cadence.eval_every == 0 or step == cadence.total_steps)
      if pending is not None and (save_now or log_now or eval_now):
        settle(*pending)
        pending = None
      if log_now and window:
        summary = window_summary(step, window)
        summary.update(throughput.report(step))
        summary.update(metrics_lib.hbm_in_use())
        writer.write_scalars(step, {k: v for k, v in summary.items() if k != "step"})
        window.clear()
      if log_now or save_now:
        loss_log.flush()  # a no-op locally; rewrites the log on an object store
        writer.flush()
      if save_now:
        checkpointer.save(step, state, train_iter, meta(step))
      if eval_now:
        eval_metrics = evaluate(state)
        writer.write_scalars(step, eval_metrics)
        summary.update(eval_metrics)
      if save_now or eval_now:
        throughput.restart(step)
      if preempted:
        logging.warning("preempted: saved step %d, stopping", step)
        break
    if pending is not None:
      settle(*pending)
  finally:
    watcher.close()
    loss_log.close()
    writer.flush()
    writer.close()
    checkpointer.close()  # waits for in-flight saves of good states; raises their errors
  return summary
