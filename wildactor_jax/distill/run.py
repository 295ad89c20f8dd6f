"""distill_and_save(config, workdir): a distillation run from start or resume to its last step.

The run's rules are the trainer's (train_lib): one process holds the workdir (W/trainer.lock);
it resumes from the newest good checkpoint (a damaged newer one is moved aside) with the same
data position and RNG, so an interrupted run ends bit-identical to an uninterrupted one; a
preemption notice saves and stops; a non-finite step stops without saving; every path may be
gs://. A resumed run must distil the same teacher checkpoint (recorded in W/config.json and in
every checkpoint's meta) into the same student model; anything else is a one-line RunError.
"""
from __future__ import annotations

import time


from wildactor_jax import fs, inference, sampling
from wildactor_jax.distill import setup as setup_lib, step as step_lib
from wildactor_jax.infer.settings import settings_from_config as generation_settings
from wildactor_jax.input import batches
from wildactor_jax.sharding import create_mesh
from wildactor_jax.train_lib import checkpoint as ckpt_lib, distributed, loop as loop_lib
from wildactor_jax.train_lib import workdir as workdir_lib, writers as writers_lib
from wildactor_jax.train_lib.checkpoint import RunError


class StepRate:
  """Distillation steps per second over a logging window (the loop's throughput object)."""

  def __init__(self, step: int):
    self.restart(step)

  def restart(self, step: int) -> None:
    self.step, self.time = step, time.perf_counter()

  def report(self, step: int) -> dict:
    now = time.perf_counter()
    steps, seconds = step - self.step, now - self.time
    self.step, self.time = step, now
    return {"steps_per_sec": steps / seconds} if steps > 0 and seconds > 0 else {}


def make_recipe(run_config, teacher_config, s: setup_lib.DistillSettings,
                null_text=None) -> step_lib.Recipe:
  """The step's numbers: the student's few-step schedule at the teacher's sampling shift, the
  teacher's sampler and guidance (its config.sample), the critic's flow shift (its config.flow);
  null_text: the empty prompt's states (default: beside the run's records)."""
  t = generation_settings(teacher_config, steps=s.teacher_sample_steps or None)
  teacher_table = sampling.coefficients(t.solver, t.steps, t.shift)
  return step_lib.Recipe(
      student_table=sampling.coefficients("fewstep", s.steps, t.shift),
      teacher_table=teacher_table,
      teacher_scales=inference.guidance_scales(t, teacher_table.sigma),
      real_cfg=t.cfg if s.real_guidance is None else s.real_guidance,
      cfg_interval=tuple(t.cfg_interval), guide_references=bool(t.guide_references),
      sample_shift=float(t.shift), flow_shift=float(teacher_config.flow.shift),
      dmd_range=s.dmd_range, critic_updates=s.critic_updates,
      null_text=batches.null_text(run_config) if null_text is None else null_text)


def _saved_teacher(workdir: str, s: setup_lib.DistillSettings) -> str | None:
  """The teacher checkpoint a workdir with checkpoints was distilled from (None: a new run)."""
  saved = workdir_lib.read_config(workdir)
  has_steps = any(n.isdigit() for n in fs.listdir(fs.join(workdir, "checkpoints")))
  if saved is None or not has_steps:
    return None
  where = fs.join(workdir, workdir_lib.CONFIG)
  d = saved.get("distill") or {}
  if not d.get("teacher_checkpoint"):
    raise RunError(f"{where}: not a distillation run (no distill.teacher_checkpoint); use a new "
                   "workdir")
  if str(d.get("teacher_workdir")).rstrip("/") != s.teacher.rstrip("/"):
    raise RunError(f"{where}: this run distils {d.get('teacher_workdir')}, not {s.teacher}; "
                   "use a new workdir")
  return str(d["teacher_checkpoint"])


def distill_and_save(config, workdir: str, *, make_train_source=None) -> dict:
  """Runs (or resumes) distillation to config.distill.train_steps; returns the last logged
  metrics. make_train_source(run config) -> the conditioning batches (a checkpointable Grain
  iterator; default: the training source of config.data with the teacher's autoencoder and text
  encoder geometry, as W/config.json records them)."""
  with workdir_lib.WorkdirLock(workdir):
    return _distill(config, workdir, make_train_source or
                    (lambda run_config: batches.create_source(run_config, "train")))


def _distill(config, workdir: str, make_train_source) -> dict:
  s = setup_lib.settings_from_config(config)
  every = int(config.checkpoint.get("every", 0))
  if every <= 0:
    raise RunError(f"config.checkpoint.every = {every}: expected a positive integer")
  mesh = create_mesh(config.mesh.shape, config.mesh.axes)
  rules = tuple((name, axes) for name, axes in config.mesh.rules)
  distributed.log_layout(mesh)
  batches.check_batch_divides_mesh(config, mesh, rules)
  resumed_from = _saved_teacher(workdir, s)
  teacher = setup_lib.restore_teacher(resumed_from or s.teacher, mesh)
  run_config = setup_lib.student_run_config(config, teacher, s)
  if resumed_from is not None:
    workdir_lib.check_config(run_config, workdir_lib.read_config(workdir).to_dict(),
                             fs.join(workdir, workdir_lib.CONFIG), False)
  parts = setup_lib.make_parts(run_config, s, mesh, rules)
  frozen = setup_lib.frozen_from_teacher(teacher.model, parts)
  teacher_config = teacher.config
  del teacher
  record = {"checkpoint": run_config.distill.teacher_checkpoint,
            "backbone": ckpt_lib.backbone_record(teacher_config)}
  checkpointer = ckpt_lib.Checkpointer(workdir, config.checkpoint.get("keep", 3),
                                       async_save=config.checkpoint.get("async_save", True))
  train_iter = make_train_source(run_config)

  def restore(step):
    state, meta = checkpointer.restore(step, parts.abstract_state, train_iter)
    ckpt_lib.check_backbone(meta, record["backbone"], checkpointer.directory)
    if meta.get("teacher", {}).get("checkpoint") != record["checkpoint"]:
      raise RunError(f"{checkpointer.step_dir(step)}: distilled from teacher "
                     f"{meta.get('teacher')}, this run's is {record['checkpoint']}")
    return state

  state = loop_lib.resume_or_start(checkpointer, restore,
                                   lambda: setup_lib.init_state(run_config, s, parts))
  writer = writers_lib.create_writer(workdir)
  workdir_lib.save_config(run_config, workdir, writer)
  start = int(state["step"])

  recipe = make_recipe(run_config, teacher_config, s)
  abstract_batch = batches.abstract_batch(run_config, mesh, rules)
  jitted = {}

  def jitted_step(mode):
    if mode not in jitted:
      jitted[mode] = step_lib.jit_step(step_lib.make_step(parts, recipe, mesh, rules, mode), parts,
                                       abstract_batch, mesh, rules)
    return jitted[mode]

  host_step = [start]

  def step_fn(state, batch):
    mode = "regression" if host_step[0] < s.regression_steps else "dmd"
    host_step[0] += 1
    return jitted_step(mode)(frozen, state, batches.to_global(batch, mesh, rules))

  cadence = loop_lib.Cadence(s.train_steps, every, s.log_every, 0,
                             int(config.distill.get("profile_steps", 0)))
  meta = lambda step: dict(ckpt_lib.metadata(run_config, step, mesh.shape), teacher=record)
  return loop_lib.run_steps(step_fn, state, train_iter, checkpointer, cadence, workdir=workdir,
                            start=start, meta=meta, writer=writer,
                            make_throughput=lambda step, batch: StepRate(step))


def planning_step(config, mesh):
  """(jitted DMD step, its abstract arguments) for distilling a teacher of `config`'s model and
  sampler on `mesh`, without a teacher or any weights: what launch/aot_compile.py --program
  distill compiles for a TPU slice."""
  import ml_collections
  import numpy as np
  from wildactor_jax.input.schema import text_length
  s = setup_lib.settings_from_config(config, planning=True)
  rules = tuple((name, axes) for name, axes in config.mesh.rules)
  run_config = ml_collections.ConfigDict(config.to_dict())
  run_config.model = setup_lib.student_model_config(config.model.to_dict(), s)
  batches.check_batch_divides_mesh(run_config, mesh, rules)
  parts = setup_lib.make_parts(run_config, s, mesh, rules)
  null = np.zeros((text_length(run_config), int(run_config.model.text_dim)), np.float32)
  recipe = make_recipe(run_config, config, s, null_text=null)
  abstract_batch = batches.abstract_batch(run_config, mesh, rules)
  step = step_lib.jit_step(step_lib.make_step(parts, recipe, mesh, rules, "dmd"), parts,
                           abstract_batch, mesh, rules)
  return step, (parts.setup.abstract_frozen, parts.abstract_state, abstract_batch)
