"""The train state: what is trained (LoRA), the optimiser over it, and their shardings.

The model splits into a graph definition, the frozen backbone (`loading.FROZEN`: every Param
that is not a LoRAParam) and the LoRA adapters. The optimiser is built over the LoRA state only,
so AdamW holds no moments for the 5B frozen weights. The train state is a plain dict

    {"step": int32 (), "lora": nnx.State, "opt": optax state, "rng": uint32 key data}

which is what checkpoints hold; the frozen weights are re-created (random init from the seed) or
re-loaded (from config.backbone_path) on every start. Everything here also works on abstract
values (ShapeDtypeStructs with shardings), which is how the ahead-of-time compile plans a TPU run.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import FROZEN, abstract_model, create_model, state_shardings
from wildactor_jax.models.lora import VideoLoRAParam
from wildactor_jax.sharding import create_mesh, logical_to_spec
from wildactor_jax.train_lib.checkpoint import RunError

TRAIN_DTYPE = jnp.float32  # LoRA master weights and their Adam moments


class Setup(NamedTuple):
  """Static structure of a run on one mesh: no device memory is held here."""
  graphdef: Any
  abstract_frozen: nnx.State   # ShapeDtypeStructs with shardings
  abstract_train: dict         # same, for the train state dict
  frozen_shardings: nnx.State
  train_shardings: dict


def learning_rate_schedule(train_cfg) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then cosine decay to 0 at train.steps."""
  warmup = int(train_cfg.warmup_steps)
  if warmup >= int(train_cfg.steps):
    raise ValueError(f"train.warmup_steps {warmup} must be below train.steps {train_cfg.steps}")
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=float(train_cfg.learning_rate), warmup_steps=warmup,
      decay_steps=int(train_cfg.steps), end_value=float(train_cfg.get("end_learning_rate", 0.0)))


def build_optimizer(train_cfg) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Global-norm clipping, then AdamW with warmup + cosine (applies to LoRA weights only)."""
  schedule = learning_rate_schedule(train_cfg)
  tx = optax.chain(
      optax.clip_by_global_norm(float(train_cfg.grad_clip)),
      optax.adamw(schedule, b1=float(train_cfg.b1), b2=float(train_cfg.b2),
                  weight_decay=float(train_cfg.weight_decay)))
  return tx, schedule


TRAINABLE = ("lora", "all", "video_lora")


def split_filters(trainable: str):
  """(frozen filter, trained filter) of a train.trainable mode (see split_model)."""
  if trainable == "lora":
    return FROZEN, nnx.All(nnx.LoRAParam, nnx.Not(VideoLoRAParam))
  if trainable == "video_lora":
    return nnx.All(nnx.Param, nnx.Not(VideoLoRAParam)), VideoLoRAParam
  if trainable == "all":
    return nnx.Nothing(), nnx.Param
  raise ValueError(f"train.trainable {trainable!r}: expected one of {TRAINABLE}")


def split_model(model, trainable: str = "lora") -> tuple[Any, nnx.State, nnx.State]:
  """model -> (graphdef, frozen state, trained state); any other variable kind is an error.

  trainable="lora" (WildActor): train the reference LoRA, freeze the backbone. "all": train every
  parameter (pre-training or fine-tuning a backbone, as the CPU demo does for its toy backbone);
  the frozen state is then empty. "video_lora" (few-step distillation, wildactor_jax/distill):
  train the video tokens' adapter set, freeze the backbone and the identity LoRA. The train state
  keeps the key "lora" for what is trained."""
  frozen_filter, train_filter = split_filters(trainable)
  graphdef, frozen, lora, rest = nnx.split(model, frozen_filter, train_filter, ...)
  if jax.tree.leaves(rest):
    raise ValueError(f"model has variables that are neither frozen nor trained under "
                     f"train.trainable={trainable!r}: "
                     f"{jax.tree.map(lambda x: getattr(x, 'shape', x), rest)}")
  if not jax.tree.leaves(lora):
    what = ("model.video_lora_rank > 0" if trainable == "video_lora" else
            "model.lora=True and model.lora_rank > 0")
    raise ValueError(f"model has no trainable adapter parameters: set {what}")
  return graphdef, frozen, lora


def _with_sharding(abstract, shardings, dtype=None):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, dtype or a.dtype, sharding=s),
                      abstract, shardings)


def _spec_axes(entry) -> tuple[str, ...]:
  return () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))


def shard_replicated(sharding: NamedSharding, shape, data_axes: tuple[str, ...]) -> NamedSharding:
  """ZeRO for trainable state: a leaf the logical rules leave replicated (e.g. LoRA `up`, whose
  axes (lora_rank, qkv) map to the size-1 tensor axis under pure FSDP) is split over the
  data-parallel axes on its largest divisible dimension. Values and maths are unchanged; it only
  stops every device from holding a copy of it and of its two Adam moments."""
  mesh, spec = sharding.mesh, list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
  used = {a for e in spec for a in _spec_axes(e)}
  if math.prod(mesh.shape[a] for a in used) > 1:
    return sharding
  for axes in (data_axes,) + tuple((a,) for a in data_axes):
    ways = math.prod(mesh.shape[a] for a in axes)
    dims = [i for i in range(len(shape)) if ways > 1 and shape[i] % ways == 0]
    if dims:
      dim = max(dims, key=lambda i: shape[i])
      spec[dim] = axes[0] if len(axes) == 1 else axes
      return NamedSharding(mesh, P(*spec))
  return sharding


def make_setup(cfg: ModelConfig, tx: optax.GradientTransformation | None, mesh, rules,
               seed: int = 0, trainable: str = "lora") -> Setup:
  """Abstract train state and shardings for `mesh`: frozen weights by their logical names (FSDP
  over the fsdp axis under the default rules), LoRA the same (or ZeRO-split when that leaves
  them replicated), optimiser moments like their parameters, scalars replicated. tx=None
  (inference): the train state is the trained parameters alone, {"lora": ...}.

  LoRA weights are trained in float32 whatever model.param_dtype says: bf16 master weights
  would round away updates smaller than ~0.4% of a weight. The model casts them to the compute
  dtype when it applies them, so merging float32 LoRA into a bf16 model is exact."""
  graphdef, frozen_abs, lora_abs = split_model(abstract_model(cfg, seed, mesh, rules), trainable)
  replicated = NamedSharding(mesh, P())
  frozen_sh = state_shardings(frozen_abs, mesh, rules)
  data_axes = _spec_axes(logical_to_spec(("batch",), rules)[0])
  lora_sh = jax.tree.map(lambda s, a: shard_replicated(s, a.shape, data_axes),
                         state_shardings(lora_abs, mesh, rules), lora_abs)
  lora_abs = _with_sharding(lora_abs, lora_sh, TRAIN_DTYPE)
  if tx is None:
    return Setup(graphdef, _with_sharding(frozen_abs, frozen_sh), {"lora": lora_abs}, frozen_sh,
                 {"lora": lora_sh})
  opt_abs = jax.eval_shape(tx.init, lora_abs)
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, opt_abs, lora_sh,
                                 transform_non_params=lambda _: replicated)
  rng_abs = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
  train_abs = {"step": jax.ShapeDtypeStruct((), jnp.int32), "lora": lora_abs, "opt": opt_abs,
               "rng": rng_abs}
  train_sh = {"step": replicated, "lora": lora_sh, "opt": opt_sh, "rng": replicated}
  return Setup(graphdef, _with_sharding(frozen_abs, frozen_sh), _with_sharding(train_abs, train_sh),
               frozen_sh, train_sh)


def init_train_state(lora: nnx.State, tx: optax.GradientTransformation, setup: Setup,
                     seed: int) -> dict:
  """A fresh train state at step 0 around initialised LoRA weights (already on their shardings)."""

  def init(lora):
    lora = jax.tree.map(lambda x: x.astype(TRAIN_DTYPE), lora)
    return {"step": jnp.zeros((), jnp.int32), "lora": lora, "opt": tx.init(lora),
            "rng": jax.random.key_data(jax.random.key(seed))}

  return jax.jit(init, out_shardings=setup.train_shardings)(lora)



class RunSetup(NamedTuple):
  """Everything a program derives from an experiment config before touching weights."""
  mesh: Any
  rules: tuple
  model_cfg: ModelConfig
  trainable: str
  seed: int
  backbone_path: str | None
  tx: optax.GradientTransformation | None
  schedule: optax.Schedule | None
  setup: Setup

  def create_model(self):
    """The model on the mesh: frozen weights from backbone_path (or random from the seed),
    trained weights freshly initialised from the seed."""
    return create_model(self.model_cfg, seed=self.seed, backbone_path=self.backbone_path,
                        mesh=self.mesh, rules=self.rules)


def model_config(config) -> ModelConfig:
  """config.model as a ModelConfig; a bad field is a one-line RunError naming it."""
  try:
    return ModelConfig.from_mapping(config.model)
  except ValueError as e:  # ModelConfig's own checks name the field (model.lora_targets ...)
    raise RunError(f"config.{e}") from None


def setup_from_config(config, mesh=None, *, optimizer: bool = True) -> RunSetup:
  """The one set-up sequence of train, bench, generate and the AOT planner: mesh (config.mesh
  unless given), sharding rules, model config, optimiser (optimizer=False: none, for inference)
  and the abstract state with its shardings."""
  mesh = create_mesh(config.mesh.shape, config.mesh.axes) if mesh is None else mesh
  rules = tuple((name, axes) for name, axes in config.mesh.rules)
  cfg = model_config(config)
  trainable = str(config.train.get("trainable", "lora"))
  seed = int(config.train.seed)
  tx, schedule = build_optimizer(config.train) if optimizer else (None, None)
  return RunSetup(mesh, rules, cfg, trainable, seed, config.get("backbone_path") or None, tx,
                  schedule, make_setup(cfg, tx, mesh, rules, seed, trainable))
