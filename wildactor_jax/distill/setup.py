"""What a distillation run is made of: its settings (config.distill), the teacher it distils, the
student's model config, and the train state of the two adapter sets it trains.

    settings = settings_from_config(config)          # one-line errors naming config.distill.X
    teacher = restore_teacher(source, mesh)          # a finished WildActor run, frozen
    run_config = student_run_config(config, teacher, settings)   # what W/config.json holds
    parts = make_parts(run_config, teacher, settings, mesh, rules)

The student is the teacher's model (frozen backbone + identity LoRA) with a video-token adapter
set (model.video_lora_rank, models/lora.py): the generator's *step LoRA* and, in the same slot,
the critic's own LoRA. The train state is

    {"step", "lora": step LoRA, "critic": critic LoRA, "opt": {"generator", "critic"}, "rng"}

so that a checkpoint's `params` item is the step LoRA alone, which is all `load_run` needs to
rebuild the student on top of the teacher it records.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from wildactor_jax import fs
from wildactor_jax.infer import restore
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import abstract_model
from wildactor_jax.models.lora import VideoLoRAParam
from wildactor_jax.models.transformer import WanTransformer
from wildactor_jax.train_lib import state as state_lib
from wildactor_jax.train_lib.checkpoint import RunError

TRAINABLE = "video_lora"


@dataclasses.dataclass(frozen=True)
class DistillSettings:
  teacher: str                     # a WildActor workdir or checkpoint folder
  steps: int                       # the student's sampling steps (sampling's "fewstep")
  rank: int                        # step LoRA (and critic LoRA) rank
  scale: float
  targets: tuple[str, ...]
  train_steps: int                 # generator updates
  critic_updates: int              # critic updates per generator update (two time-scale rule)
  generator_lr: float
  critic_lr: float
  warmup_steps: int
  grad_clip: float
  b1: float
  b2: float
  weight_decay: float
  dmd_range: tuple[float, float]   # DMD noise levels: u in this range before the shift
  regression_steps: int            # first generator updates regress on teacher ODE pairs
  teacher_sample_steps: int        # the teacher sampler's steps for those pairs (0: its own)
  real_guidance: float | None      # the teacher's guidance scale (None: its sample.cfg)
  seed: int
  log_every: int


def _get(d, key: str, default=None):
  return d.get(key, default) if d is not None else default


def settings_from_config(config, planning: bool = False) -> DistillSettings:
  """config.distill -> settings; every bad value is a one-line RunError naming its field.
  planning: no teacher needed (an ahead-of-time compile from abstract values)."""
  d = config.get("distill")
  if d is None:
    raise RunError("config has no `distill` section (see configs/wildactor_wan22_5b.py)")

  def integer(name, lo):
    v = _get(d, name)
    if v is None or isinstance(v, bool) or int(v) != v or int(v) < lo:
      raise RunError(f"config.distill.{name} = {v!r}: expected an integer >= {lo}")
    return int(v)

  def number(name, lo, hi, default=None):
    v = _get(d, name, default)
    try:
      f = float(v)
    except (TypeError, ValueError):
      f = float("nan")
    if not lo <= f <= hi:
      raise RunError(f"config.distill.{name} = {v!r}: expected a number in [{lo}, {hi}]")
    return f

  teacher = str(_get(d, "teacher_workdir", "") or "")
  if not teacher and not planning:
    raise RunError("config.distill.teacher_workdir is empty: pass --config.distill.teacher_"
                   "workdir=T, a finished WildActor run (workdir or checkpoint folder)")
  targets = tuple(_get(d, "step_lora_targets", ModelConfig.video_lora_targets))
  rng = tuple(_get(d, "dmd_time_range", (0.02, 0.98)))
  if len(rng) != 2 or not 0.0 <= float(rng[0]) < float(rng[1]) <= 1.0:
    raise RunError(f"config.distill.dmd_time_range = {rng!r}: expected (lo, hi), "
                   "0 <= lo < hi <= 1")
  guidance = _get(d, "real_guidance")
  s = DistillSettings(
      teacher=teacher, steps=integer("steps", 1), rank=integer("step_lora_rank", 1),
      scale=number("step_lora_scale", 0.0, 1e6, 1.0), targets=targets,
      train_steps=integer("train_steps", 1), critic_updates=integer("critic_updates", 1),
      generator_lr=number("generator_learning_rate", 0.0, 1.0),
      critic_lr=number("critic_learning_rate", 0.0, 1.0),
      warmup_steps=integer("warmup_steps", 0), grad_clip=number("grad_clip", 0.0, 1e9),
      b1=number("b1", 0.0, 1.0), b2=number("b2", 0.0, 1.0),
      weight_decay=number("weight_decay", 0.0, 1.0, 0.0),
      dmd_range=(float(rng[0]), float(rng[1])), regression_steps=integer("regression_steps", 0),
      teacher_sample_steps=integer("teacher_sample_steps", 0),
      real_guidance=None if guidance is None or float(guidance) < 0 else float(guidance),
      seed=integer("seed", 0), log_every=integer("log_every", 1))
  if s.warmup_steps >= s.train_steps:
    raise RunError(f"config.distill.warmup_steps {s.warmup_steps}: expected fewer than "
                   f"config.distill.train_steps {s.train_steps}")
  if s.regression_steps > s.train_steps:
    raise RunError(f"config.distill.regression_steps {s.regression_steps}: expected at most "
                   f"config.distill.train_steps {s.train_steps}")
  try:
    ModelConfig(video_lora_rank=s.rank, video_lora_targets=targets)
  except ValueError as e:
    raise RunError(f"config.distill.step_lora_targets: {e}") from None
  return s


def optimizer(s: DistillSettings, learning_rate: float, updates_per_step: int = 1):
  """(tx, schedule): train_lib's clipped AdamW with warmup + cosine over the run, which makes
  `updates_per_step` updates of it per generator update (the critic's: critic_updates)."""
  return state_lib.build_optimizer(ml_collections.ConfigDict(dict(
      steps=s.train_steps * updates_per_step, warmup_steps=s.warmup_steps * updates_per_step,
      learning_rate=learning_rate,
      grad_clip=s.grad_clip, b1=s.b1, b2=s.b2, weight_decay=s.weight_decay)))


def restore_teacher(source: str, mesh) -> restore.Run:
  """The finished WildActor run to distil (its own config.json), on `mesh`; a distilled run is
  refused (distil a teacher, not a student)."""
  teacher = restore.load_run(source, mesh)
  if restore.is_distilled(teacher.config):
    raise RunError(f"config.distill.teacher_workdir {source}: a distilled run; expected a "
                   "WildActor (teacher) run")
  return teacher


def student_model_config(teacher_model: dict, s: DistillSettings) -> dict:
  return dict(teacher_model, video_lora_rank=s.rank, video_lora_scale=s.scale,
              video_lora_targets=list(s.targets))


def student_run_config(config, teacher: restore.Run, s: DistillSettings):
  """W/config.json of the distilled run: the teacher's model (+ the step LoRA), backbone,
  autoencoder, text encoder and train record; this run's data, mesh, checkpoint and distill
  sections, with the exact teacher checkpoint used; a few-step, unguided `sample` section, so
  `generate`, `story` and `evaluate` sample the student as it was trained."""
  out = ml_collections.ConfigDict(config.to_dict())
  t = teacher.config
  out.model = ml_collections.ConfigDict(student_model_config(t.model.to_dict(), s))
  out.backbone_path = t.get("backbone_path", "") or ""
  out.vae, out.text_encoder = t.vae.to_dict(), t.text_encoder.to_dict()
  out.train = dict(t.train.to_dict(), trainable=TRAINABLE)
  out.sample = dict(t.sample.to_dict(), steps=s.steps, cfg=1.0, solver="fewstep",
                    guide_references=False, cfg_interval=(0.0, 1.0))
  out.distill.teacher_checkpoint = fs.join(teacher.workdir, "checkpoints", str(teacher.step))
  out.distill.teacher_sample = t.sample.to_dict()
  return out


class Parts(NamedTuple):
  """The static structure of a distillation run on one mesh."""
  teacher_graph: Any
  student_graph: Any
  setup: state_lib.Setup           # the student's: frozen = backbone + identity LoRA
  abstract_state: dict
  shardings: dict
  tx_generator: optax.GradientTransformation
  tx_critic: optax.GradientTransformation
  schedule: optax.Schedule


def make_parts(run_config, s: DistillSettings, mesh, rules) -> Parts:
  student_cfg = ModelConfig.from_mapping(run_config.model)
  teacher_cfg = dataclasses.replace(student_cfg, video_lora_rank=0)
  tx_g, schedule = optimizer(s, s.generator_lr)
  tx_c, _ = optimizer(s, s.critic_lr, s.critic_updates)
  setup_g = state_lib.make_setup(student_cfg, tx_g, mesh, rules, s.seed, TRAINABLE)
  setup_c = state_lib.make_setup(student_cfg, tx_c, mesh, rules, s.seed, TRAINABLE)
  g, c = setup_g.abstract_train, setup_c.abstract_train
  abstract = {"step": g["step"], "lora": g["lora"], "critic": c["lora"],
              "opt": {"generator": g["opt"], "critic": c["opt"]}, "rng": g["rng"]}
  gs, cs = setup_g.train_shardings, setup_c.train_shardings
  shardings = {"step": gs["step"], "lora": gs["lora"], "critic": cs["lora"],
               "opt": {"generator": gs["opt"], "critic": cs["opt"]}, "rng": gs["rng"]}
  # Built for the mesh, as the student's graph (train_lib/state.py): both run on it, whoever
  # calls them (the attention kernel under shard_map).
  teacher_graph = nnx.split(abstract_model(teacher_cfg, s.seed, mesh, rules))[0]
  return Parts(teacher_graph, setup_g.graphdef, setup_g, abstract, shardings, tx_g, tx_c,
               schedule)


def frozen_from_teacher(teacher_model: WanTransformer, parts: Parts) -> nnx.State:
  """The teacher's weights (backbone + identity LoRA) on the student's frozen shardings."""
  frozen = nnx.state(teacher_model, nnx.Param)
  want = jax.tree.structure(parts.setup.abstract_frozen)
  if jax.tree.structure(frozen) != want:
    raise RunError("the teacher's weights do not match the student's frozen state (a model "
                   "config change between them?)")
  return jax.device_put(frozen, parts.setup.frozen_shardings)


def init_state(run_config, s: DistillSettings, parts: Parts) -> dict:
  """Step 0: both adapter sets zero (up = 0: generator and critic start as the teacher), with
  different random `down` factors, fresh optimisers, the run's RNG."""
  cfg = ModelConfig.from_mapping(run_config.model)

  def adapters(seed):
    # Only the video adapters are kept: XLA drops the rest of the initialisation as dead code.
    return nnx.state(WanTransformer(cfg, rngs=nnx.Rngs(seed)), VideoLoRAParam)

  def init():
    g = jax.tree.map(lambda x: x.astype(state_lib.TRAIN_DTYPE), adapters(s.seed))
    c = jax.tree.map(lambda x: x.astype(state_lib.TRAIN_DTYPE), adapters(s.seed + 1))
    return {"step": jnp.zeros((), jnp.int32), "lora": g, "critic": c,
            "opt": {"generator": parts.tx_generator.init(g), "critic": parts.tx_critic.init(c)},
            "rng": jax.random.key_data(jax.random.key(s.seed))}

  return jax.jit(init, out_shardings=parts.shardings)()
