"""python -m wildactor_jax.train --config configs/X.py[:arg] --workdir W [--config.a.b=v ...]

Trains WildActor's reference-only LoRA on a frozen Wan DiT with rectified flow. Resumes from the
newest checkpoint in W/checkpoints automatically; metrics go to W (TensorBoard) and the log,
per-step losses to W/losses.jsonl. The loop is `train_and_evaluate`; the pieces live in
`wildactor_jax.train_lib`.
"""
from __future__ import annotations

import os
import signal

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import create_model
from wildactor_jax.sharding import create_mesh
from wildactor_jax.train_lib import checkpoint as ckpt_lib
from wildactor_jax.input import batches as data_spec  # the old name keeps the body unchanged
from wildactor_jax.train_lib import distributed, metrics as metrics_lib
from wildactor_jax.train_lib import state as state_lib, step as step_lib, writers as writers_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, logs)")


class NonFiniteError(FloatingPointError):
  pass


def _require_positive(config, path: str) -> int:
  section, field = path.split(".")
  value = config[section].get(field) if section in config else None
  if value is None or int(value) <= 0:
    raise ValueError(f"config.{path} = {value!r}: expected a positive integer")
  return int(value)


def _debug(config, name: str) -> int:
  """Test hooks (config.debug.*): a step number, or -1 for off."""
  debug = config.get("debug") or {}
  return int(debug.get(name, -1))


def _evaluate(config, eval_step, frozen, lora, mesh, rules) -> dict[str, float]:
  """Mean loss at each fixed flow time over config.train.eval_batches held-out batches."""
  source = data_spec.create_source(config, "test")
  num = int(config.train.get("eval_batches", 2))
  losses = np.mean([np.asarray(eval_step(frozen, lora, data_spec.to_global(next(source), mesh, rules), i))
                    for i in range(num)], axis=0)
  out = {f"eval_loss_t{t:g}": float(l) for t, l in zip(config.train.eval_timesteps, losses)}
  out["eval_loss"] = float(np.mean(losses))
  return out


def save_config(config, workdir: str) -> None:
  """workdir/config.json (process 0, atomically): what `generate` restores the run with."""
  if jax.process_index() != 0:
    return
  from etils import epath
  folder = epath.Path(workdir)
  folder.mkdir(parents=True, exist_ok=True)
  tmp = folder / f".config.json.tmp-{os.getpid()}"
  tmp.write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  tmp.replace(folder / "config.json")  # overwrites: a resumed run rewrites it


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs (or resumes) training to config.train.steps; returns the last logged metrics."""
  total_steps = _require_positive(config, "train.steps")
  every = _require_positive(config, "checkpoint.every")
  log_every = int(config.train.get("log_every", 50))
  eval_every = int(config.train.get("eval_every", 0))
  seed = int(config.train.seed)
  mesh = create_mesh(config.mesh.shape, config.mesh.axes)
  rules = tuple((name, axes) for name, axes in config.mesh.rules)
  distributed.log_layout(mesh)
  save_config(config, workdir)
  data_spec.check_batch_divides_mesh(config, mesh, rules)
  cfg = ModelConfig.from_mapping(config.model)
  tx, schedule = state_lib.build_optimizer(config.train)
  trainable = str(config.train.get("trainable", "lora"))
  setup = state_lib.make_setup(cfg, tx, mesh, rules, seed, trainable)

  # Frozen weights: the converted backbone (or random from the seed, tiny configs), every start.
  model = create_model(cfg, seed=seed, backbone_path=config.get("backbone_path") or None,
                       mesh=mesh, rules=rules)
  _, frozen, fresh_lora = state_lib.split_model(model, trainable)
  del model
  record = ckpt_lib.backbone_record(config)
  checkpointer = ckpt_lib.Checkpointer(workdir, config.checkpoint.get("keep", 3),
                                       async_save=config.checkpoint.get("async_save", True))
  train_iter = data_spec.create_source(config, "train")
  latest = checkpointer.latest_step()
  if latest is None:
    state = state_lib.init_train_state(fresh_lora, tx, setup, seed)
  else:
    logging.info("resuming from %s/%d", checkpointer.directory, latest)
    state, meta = checkpointer.restore(latest, setup.abstract_train, train_iter)
    ckpt_lib.check_backbone(meta, record, checkpointer.directory)
  del fresh_lora
  start = int(state["step"])

  abstract_batch = data_spec.abstract_batch(config, mesh, rules)
  train_step = step_lib.jit_train_step(
      step_lib.make_train_step(setup, tx, schedule, float(config.flow.shift), mesh, rules),
      setup, abstract_batch, mesh, rules)
  eval_step = (step_lib.make_eval_step(setup, config.train.eval_timesteps, seed + 1, mesh, rules,
                                       abstract_batch) if eval_every > 0 else None)

  writer = writers_lib.create_writer(workdir)
  if start == 0:
    writer.write_hparams({k: str(v) if isinstance(v, (tuple, list)) else v
                          for k, v in _flatten(config.to_dict()).items()})
  hooks = writers_lib.progress_hooks(workdir, total_steps, writer,
                                     int(config.train.get("profile_steps", 5)), start + 10)
  loss_log = metrics_lib.LossLog(workdir, start)
  throughput = None  # built from the first batch's shapes
  watcher = distributed.PreemptionWatcher(checkpointer.manager)
  nan_step, crash_step = _debug(config, "nan_at_step"), _debug(config, "crash_at_step")
  window: list[dict] = []
  summary: dict = {"step": start}

  def settle(step_done, metrics):
    """Waits for a step's metrics; stops the run (saving nothing) if they are not finite."""
    m = jax.device_get(metrics)
    if not m["finite"]:
      raise NonFiniteError(
          f"step {step_done}: loss {m['loss']} / gradient norm {m['grad_norm']} is not finite; "
          f"stopped without saving. Last good checkpoint: step {checkpointer.latest_step()} in "
          f"{checkpointer.directory}")
    loss_log.write(step_done, m["loss"])
    window.append(m)

  pending = None
  step = start
  try:
    while step < total_steps:
      batch = next(train_iter)
      if throughput is None:
        shapes = {k: np.shape(v)[1:] for k, v in batch.items()}
        throughput = metrics_lib.Throughput(config, step, shapes)
      if step + 1 == nan_step:  # test hook: a poisoned batch must trip the guard
        batch = dict(batch, video_latents=np.full_like(batch["video_latents"], np.nan))
      with jax.profiler.StepTraceAnnotation("train", step_num=step + 1):
        state, metrics = train_step(frozen, state, data_spec.to_global(batch, mesh, rules))
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
      save_now = step % every == 0 or step == total_steps or preempted
      log_now = step % log_every == 0 or step == total_steps
      eval_now = eval_step is not None and (step % eval_every == 0 or step == total_steps)
      if pending is not None and (save_now or log_now or eval_now or step == crash_step):
        settle(*pending)
        pending = None
      if log_now and window:
        summary = {"step": step, "loss": float(np.mean([m["loss"] for m in window])),
                   "grad_norm": float(np.mean([m["grad_norm"] for m in window])),
                   "learning_rate": float(window[-1]["learning_rate"])}
        summary.update(throughput.report(step))
        summary.update(metrics_lib.hbm_in_use())
        writer.write_scalars(step, {k: v for k, v in summary.items() if k != "step"})
        window.clear()
      if save_now:
        checkpointer.save(step, state, train_iter, ckpt_lib.metadata(config, step, mesh.shape))
      if eval_now:
        eval_metrics = _evaluate(config, eval_step, frozen, state["lora"], mesh, rules)
        writer.write_scalars(step, eval_metrics)
        summary.update(eval_metrics)
      if save_now or eval_now:
        throughput.restart(step)
      if step == crash_step:  # test hook: die like a preempted VM, no clean-up at all
        os.kill(os.getpid(), signal.SIGKILL)
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


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed.maybe_initialize()
  train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
