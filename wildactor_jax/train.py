"""python -m wildactor_jax.train --config configs/X.py[:arg] --workdir W [--config.a.b=v ...]

Trains WildActor's reference-only LoRA on a frozen Wan DiT with rectified flow. Resumes from the
newest good checkpoint in W/checkpoints automatically (a damaged newer one is moved to
W/damaged_checkpoints, with a warning); a saved model config that differs from this one is
refused unless --allow_config_change. One trainer per workdir (W/trainer.lock). Metrics go to W
(TensorBoard) and the log, per-step losses to W/losses.jsonl. User errors: one line, exit 2. The loop is `train_and_evaluate`; the pieces live in
`wildactor_jax.train_lib`.
"""
from __future__ import annotations

import sys

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from wildactor_jax import cli, fs
from wildactor_jax.models import irope
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.train_lib import checkpoint as ckpt_lib
from wildactor_jax.input import batches, schema
from wildactor_jax.train_lib import distributed, loop as loop_lib, metrics as metrics_lib
from wildactor_jax.train_lib.loop import NonFiniteError  # noqa: F401  (raised by the loop)
from wildactor_jax.train_lib import state as state_lib, step as step_lib, writers as writers_lib
from wildactor_jax.train_lib import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, logs)")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "resume a workdir whose saved model config differs from this "
    "one (only where the trained weights keep their shapes)")


def _require_positive(config, path: str) -> int:
  section, field = path.split(".")
  value = config[section].get(field) if section in config else None
  if value is None or int(value) <= 0:
    raise ckpt_lib.RunError(f"config.{path} = {value!r}: expected a positive integer")
  return int(value)


def _evaluate(config, eval_step, frozen, lora, mesh, rules) -> dict[str, float]:
  """Mean loss at each fixed flow time over config.train.eval_batches held-out batches."""
  source = batches.create_source(config, "test")
  num = int(config.train.get("eval_batches", 2))
  losses = np.mean([np.asarray(eval_step(frozen, lora, batches.to_global(next(source), mesh, rules), i))
                    for i in range(num)], axis=0)
  out = {f"eval_loss_t{t:g}": float(l) for t, l in zip(config.train.eval_timesteps, losses)}
  out["eval_loss"] = float(np.mean(losses))
  return out


def _shapes(tree) -> list:
  return [(jax.tree_util.keystr(p), tuple(x.shape), str(x.dtype))
          for p, x in jax.tree_util.tree_leaves_with_path(tree)]


def check_resumable(config, workdir: str, rs, allow_config_change: bool) -> None:
  """Before anything is written: a workdir with checkpoints must be resumed with the config it
  was trained with (config.json's, up to workdir_lib.RESUME_FREE fields), or, with
  --allow_config_change, one whose trained state has the same shapes (e.g. another learning
  rate, aipa or irope switched; not lora_rank)."""
  ckpts = fs.join(workdir, "checkpoints")
  saved = workdir_lib.read_config(workdir)
  if saved is None or not any(n.isdigit() for n in fs.listdir(ckpts)):
    return
  where = fs.join(workdir, workdir_lib.CONFIG)
  workdir_lib.check_config(config, saved.to_dict(), where, allow_config_change)
  old = state_lib.make_setup(ModelConfig.from_mapping(saved.model), rs.tx, rs.mesh, rs.rules,
                             rs.seed, rs.trainable)
  if _shapes(old.abstract_train) != _shapes(rs.setup.abstract_train):
    diff = "; ".join(workdir_lib.model_config_diff(saved.model.to_dict(), config.model.to_dict()))
    raise ckpt_lib.RunError(f"{where}: the model config change ({diff}) changes the shapes of the "
                            "trained weights, so the checkpoints cannot be resumed; use a new workdir")


def train_and_evaluate(config, workdir: str, *, allow_config_change: bool = False,
                       train_source=None) -> dict:
  """Runs (or resumes) training to config.train.steps; returns the last logged metrics.

  Holds the workdir's trainer lock throughout. train_source: the training batches (default: the
  config's source); it must be a checkpointable Grain iterator (get_state / set_state)."""
  check_settings(config)  # before the workdir is touched
  with workdir_lib.WorkdirLock(workdir):
    return _train(config, workdir, allow_config_change, train_source)


def check_settings(config) -> None:
  """The run's own settings, each problem a one-line RunError naming the field (what a resumed
  run may change against the saved config is workdir_lib.check_config's)."""
  _require_positive(config, "train.steps")
  _require_positive(config, "checkpoint.every")
  text_dropout = float(config.train.get("text_dropout", 0.0))
  if not 0.0 <= text_dropout < 1.0:
    raise ckpt_lib.RunError(f"config.train.text_dropout {text_dropout}: expected a rate in [0, 1)")
  position_jitter = float(config.train.get("position_jitter", 0.0))
  if not 0.0 <= position_jitter <= 1.0:
    raise ckpt_lib.RunError(f"config.train.position_jitter {position_jitter}: expected a rate in "
                            "[0, 1]")
  state_lib.model_config(config)


def reference_temporal_range(config) -> int:
  """The temporal range a backbone pre-trained with train.position_jitter learns to attend
  across: I-RoPE's farthest reference position (models/irope.py) plus one reference stride."""
  m = config.model
  latent_frames = schema.latent_grid(config)[0] // int(m.patch_size[0])
  stride = int(m.reference_frame_stride)
  return stride + irope.farthest_temporal_position(
      latent_frames, int(config.data.r_max), int(m.face_temporal_offset),
      int(m.body_temporal_offset), stride)


def _train(config, workdir: str, allow_config_change: bool, train_source) -> dict:
  total_steps = int(config.train.steps)  # this and the rates below: checked by check_settings
  every = int(config.checkpoint.every)
  log_every = int(config.train.get("log_every", 50))
  eval_every = int(config.train.get("eval_every", 0))
  text_dropout = float(config.train.get("text_dropout", 0.0))
  position_jitter = float(config.train.get("position_jitter", 0.0))
  person_weight = float(config.train.get("person_loss_weight", 1.0))  # step checks it
  rs = state_lib.setup_from_config(config)
  mesh, rules, setup, seed = rs.mesh, rs.rules, rs.setup, rs.seed
  distributed.log_layout(mesh)
  batches.check_batch_divides_mesh(config, mesh, rules)
  check_resumable(config, workdir, rs, allow_config_change)

  # Frozen weights: the converted backbone (or random from the seed, tiny configs), every start.
  model = rs.create_model()
  _, frozen, fresh_lora = state_lib.split_model(model, rs.trainable)
  del model
  record = ckpt_lib.backbone_record(config)
  checkpointer = ckpt_lib.Checkpointer(workdir, config.checkpoint.get("keep", 3),
                                       async_save=config.checkpoint.get("async_save", True))
  train_iter = batches.create_source(config, "train") if train_source is None else train_source

  def restore(step):
    state, meta = checkpointer.restore(step, setup.abstract_train, train_iter)
    ckpt_lib.check_backbone(meta, record, checkpointer.directory)
    return state

  state = loop_lib.resume_or_start(
      checkpointer, restore, lambda: state_lib.init_train_state(fresh_lora, rs.tx, setup, seed))
  del fresh_lora
  writer = writers_lib.create_writer(workdir)
  workdir_lib.save_config(config, workdir, writer)  # checked above: the same, or allowed
  start = int(state["step"])

  abstract_batch = batches.abstract_batch(config, mesh, rules)
  train_step = step_lib.jit_train_step(
      step_lib.make_train_step(setup, rs.tx, rs.schedule, float(config.flow.shift), mesh, rules,
                               text_dropout=text_dropout,
                               null_text=batches.null_text(config) if text_dropout > 0 else None,
                               position_jitter=position_jitter,
                               jitter_temporal_range=reference_temporal_range(config),
                               person_weight=person_weight),
      setup, abstract_batch, mesh, rules)
  eval_step = (step_lib.make_eval_step(setup, config.train.eval_timesteps, seed + 1, mesh, rules,
                                       abstract_batch) if eval_every > 0 else None)

  cadence = loop_lib.Cadence(total_steps, every, log_every, eval_every,
                             int(config.train.get("profile_steps", 5)))
  return loop_lib.run_steps(
      lambda state, batch: train_step(frozen, state, batches.to_global(batch, mesh, rules)),
      state, train_iter, checkpointer, cadence, workdir=workdir, start=start,
      meta=lambda step: ckpt_lib.metadata(config, step, mesh.shape), writer=writer,
      make_throughput=lambda step, batch: metrics_lib.Throughput(
          config, step, {k: np.shape(v)[1:] for k, v in batch.items()}),
      evaluate=None if eval_step is None else
      lambda state: _evaluate(config, eval_step, frozen, state["lora"], mesh, rules))


def main(argv, make_train_source=None):
  """The CLI. make_train_source(config) -> iterator: another training source (tests/faults.py
  wraps the configured one); called after the multi-process set-up, which it may need."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed.maybe_initialize()
  with distributed.fail_fast():  # a dead peer must not leave this process waiting for it
    try:
      config = _CONFIG.value
      source = None if make_train_source is None else make_train_source(config)
      train_and_evaluate(config, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value,
                         train_source=source)
    except (ckpt_lib.RunError, fs.FsError) as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      cli.exit_now(2)  # before tensorstore's exit-time tracebacks can bury the line


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run_absl(main)
