"""load_run(workdir | checkpoint, mesh) -> Run(config, model, step): a trained WildActor on this
machine's devices.

The model is the frozen backbone the checkpoint records (a converted checkpoint, or random init
from the seed) plus the checkpoint's trained parameters, restored straight onto shardings built
from the config for the mesh given here, not the saving run's layout. Only the `params` item is
read: no optimiser state is built or restored. A workdir's newest checkpoint that is damaged is
skipped with a warning naming it (the workdir is only read, never changed: it may still be
training); a checkpoint folder named explicitly must restore. Mismatches are one-line RunErrors:
a config whose model differs from the checkpoint's, another backbone.

A distilled run (wildactor_jax/distill: config.distill.teacher_checkpoint set) is its teacher
plus its step LoRA: the teacher checkpoint it records is restored first (backbone + identity
LoRA), then the checkpoint's step LoRA is added as the model's video adapter set.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import jax
from flax import nnx

from wildactor_jax import fs
from wildactor_jax.sharding import activation_sharding, create_mesh
from wildactor_jax.train_lib import checkpoint as ckpt_lib, state as state_lib
from wildactor_jax.train_lib import workdir as workdir_lib
from wildactor_jax.train_lib.checkpoint import RunError


class Run(NamedTuple):
  config: Any      # the experiment config (ConfigDict)
  model: Any       # WanTransformer with the trained weights, on `mesh`
  step: int        # the checkpoint restored
  mesh: Any
  workdir: str
  rules: tuple = ()  # the config's logical axis rules

  def sharding(self):
    """The context in which this run's activations are pinned to its mesh (as in training).
    The model needs none: it carries the mesh and runs every call on it (its attention kernel
    under shard_map), whoever calls it; this context also pins the arrays generation builds
    around the model. The values never depend on it."""
    return activation_sharding(self.mesh, self.rules)


def mesh_for(config, shape: Sequence[int] | None = None):
  """A mesh over this machine's devices with config.mesh.axes and `shape` (data, fsdp, context,
  tensor; -1: the rest of the devices), default config.mesh.shape. An explicit shape (no -1) may
  use fewer devices than exist: the first ones."""
  shape = list(config.mesh.shape if shape is None else shape)
  devices = None if -1 in shape else jax.devices()[:math.prod(shape)]
  return create_mesh(shape, config.mesh.axes, devices=devices)


def _has_steps(workdir: str) -> bool:
  return any(n.isdigit() for n in fs.listdir(fs.join(workdir, "checkpoints")))


def checkpoint_location(source: str) -> tuple[str, int | None]:
  """(workdir, step) for a checkpoint step folder (W/checkpoints/200), or (workdir, None) for a
  training workdir (its newest good checkpoint)."""
  src = fs.path(str(source).rstrip("/"))
  if src.name.isdigit():
    if not fs.isdir(src):
      raise RunError(f"{source}: no such checkpoint folder (expected e.g. WORKDIR/checkpoints/200)")
    return str(src.parent.parent), int(src.name)
  if not _has_steps(str(src)):
    raise RunError(f"{source}: no finished checkpoint in {fs.join(src, 'checkpoints')} (expected "
                   "a training workdir, or a checkpoint folder such as WORKDIR/checkpoints/200)")
  return str(src), None


def run_config(workdir: str, config=None):
  """`config` if given, else the run's saved config.json."""
  if config is not None:
    return config
  saved = workdir_lib.read_config(workdir)
  if saved is None:
    raise RunError(f"{fs.join(workdir, workdir_lib.CONFIG)}: missing; pass the experiment's "
                   "config file (--config)")
  return saved


def is_distilled(config) -> bool:
  """Whether a run's config is a distilled student's (it records the teacher checkpoint)."""
  d = config.get("distill")
  return bool(d is not None and d.get("teacher_checkpoint"))


def load_run(source: str, mesh=None, *, config=None) -> Run:
  """The trained model of a workdir or checkpoint folder. mesh: a Mesh, a shape (see mesh_for)
  or None (all devices on the fsdp axis); config: the experiment config (default: the run's
  config.json)."""
  workdir, step = checkpoint_location(source)
  config = run_config(workdir, config)
  if not isinstance(mesh, jax.sharding.Mesh):
    mesh = mesh_for(config, [1, -1, 1, 1] if mesh is None else mesh)
  teacher = None
  if is_distilled(config):
    try:
      teacher = load_run(config.distill.teacher_checkpoint, mesh)
    except (RunError, FileNotFoundError) as e:  # a moved or deleted teacher: say whose it is
      raise RunError(f"{source} is a few-step student of the teacher "
                     f"{config.distill.teacher_checkpoint} (config.distill.teacher_checkpoint in "
                     f"its config.json), which cannot be restored: {e}") from None
    if is_distilled(teacher.config):
      raise RunError(f"{config.distill.teacher_checkpoint}: the teacher of {source} is itself a "
                     "distilled run")
    diff = workdir_lib.model_config_diff(
        teacher.config.model.to_dict(),
        dict(config.model.to_dict(), video_lora_rank=0))
    if [d for d in diff if not d.startswith("model.video_lora_")]:
      raise RunError(f"{source}: its model differs from its teacher's "
                     f"({config.distill.teacher_checkpoint}: {'; '.join(diff[:4])})")
  rs = state_lib.setup_from_config(config, mesh, optimizer=False)
  record = ckpt_lib.backbone_record(config)
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)

  def restore(step):
    meta = checkpointer.read_meta(step)
    diff = workdir_lib.model_config_diff(meta.get("model", config.model.to_dict()),
                                         config.model.to_dict())
    if diff:
      raise RunError(f"{checkpointer.step_dir(step)}: trained with a different model config than "
                     f"the one given ({'; '.join(diff[:4])})")
    ckpt_lib.check_backbone(meta, record, checkpointer.directory)
    if teacher is not None and meta.get("teacher", {}).get("checkpoint") != \
        config.distill.teacher_checkpoint:
      raise RunError(f"{checkpointer.step_dir(step)}: distilled from teacher "
                     f"{meta.get('teacher')}, its config names "
                     f"{config.distill.teacher_checkpoint}")
    legacy = lambda: state_lib.setup_from_config(config, mesh).setup.abstract_train
    return checkpointer.restore_params(step, rs.setup.abstract_train["lora"], legacy)

  try:
    found = checkpointer.restore_newest_good(restore, steps=None if step is None else [step])
  finally:
    checkpointer.close()
  if found is None:
    raise RunError(f"{source}: no finished checkpoint in {checkpointer.directory}")
  if teacher is not None:  # the teacher's weights, with the step LoRA as the video adapters
    frozen = jax.device_put(nnx.state(teacher.model, nnx.Param), rs.setup.frozen_shardings)
    model = nnx.merge(rs.setup.graphdef, frozen, found[1])
    return Run(config, model, found[0], mesh, workdir, tuple(rs.rules))
  model = rs.create_model()
  nnx.update(model, found[1])
  return Run(config, model, found[0], mesh, workdir, tuple(rs.rules))
