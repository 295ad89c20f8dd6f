"""Creating models on devices: abstract shapes, shardings from the config rules, random init of
what is trained, frozen backbone weights restored straight onto their target shardings.

The frozen set is every `nnx.Param` that is not an `nnx.LoRAParam`; it comes from a converted
checkpoint (or random init for tiny configs). Nothing here materialises a full unsharded copy.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from wildactor_jax import fs
from wildactor_jax.models.checkpoint_io import (CheckpointError, read_config, read_params,
                                                write_checkpoint)
from wildactor_jax.models.attention import check_backend
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.transformer import WanTransformer
from wildactor_jax.sharding import DEFAULT_RULES, logical_to_spec

FROZEN = nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))


def abstract_model(cfg: ModelConfig, seed: int = 0, mesh=None,
                   rules=DEFAULT_RULES) -> WanTransformer:
  """The model with ShapeDtypeStruct leaves: shapes and metadata, no allocation. With a mesh, the
  model runs on it (models/transformer.py); its attention backend must suit the mesh's chips."""
  if mesh is not None:
    check_backend(cfg.attention, mesh)
  return nnx.eval_shape(lambda: WanTransformer(cfg, rngs=nnx.Rngs(seed), mesh=mesh, rules=rules))


def state_shardings(state: nnx.State, mesh, rules=DEFAULT_RULES) -> nnx.State:
  """The same State with each Variable's value replaced by its NamedSharding (or None)."""

  def one(var):
    if mesh is None:
      return var.replace(None)
    names = var.get_metadata().get("out_sharding")
    return var.replace(NamedSharding(mesh, logical_to_spec(names, rules) if names else P()))

  return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def backbone_hash(path: str) -> str:
  """A content hash of a converted backbone (local or gs://): its config and the checkpoint's
  metadata files.

  Orbax metadata records every array's shape/dtype and the per-file checksums it wrote; hashing
  those (not 10-20 GB of weights) identifies a checkpoint cheaply and stably, wherever it lives:
  a copy in a bucket hashes like the local original (same files, same order).
  """
  h = hashlib.sha256()
  for rel in fs.walk_files(path):
    name = rel.rsplit("/", 1)[-1]
    if name.endswith((".json", "_METADATA", "manifest.ocdbt")):
      h.update(rel.encode())
      h.update(fs.read_bytes(fs.join(path, rel)))
  return h.hexdigest()[:16]


def config_from_checkpoint(path: str, **overrides: Any) -> ModelConfig:
  saved = read_config(path)
  saved.pop("kind", None)
  return ModelConfig.from_mapping({**saved, **overrides})


def create_model(cfg: ModelConfig, *, seed: int = 0, backbone_path: str | None = None,
                 mesh=None, rules=DEFAULT_RULES) -> WanTransformer:
  """A model on `mesh` (or the default device): frozen weights from `backbone_path` (a converted
  checkpoint) when given, else random; LoRA weights always freshly initialised from `seed`.
  With a mesh the model also computes on it (its activations and attention kernel)."""
  abstract = abstract_model(cfg, seed, mesh, rules)
  graphdef, frozen_abs, rest_abs = nnx.split(abstract, FROZEN, ...)
  init_filter = ... if backbone_path is None else nnx.Not(FROZEN)
  init_abs = nnx.state(abstract, init_filter)
  out_shardings = state_shardings(init_abs, mesh, rules) if mesh is not None else None

  def init():  # unused initialisers (the frozen ones when loading) are dead code for XLA
    return nnx.state(WanTransformer(cfg, rngs=nnx.Rngs(seed)), init_filter)

  init_state = jax.jit(init, out_shardings=out_shardings)()
  model = nnx.merge(graphdef, frozen_abs, rest_abs)
  nnx.update(model, init_state)
  if backbone_path is not None:
    load_frozen(model, backbone_path, mesh, rules)
  return model


def load_frozen(model: WanTransformer, path: str, mesh=None, rules=DEFAULT_RULES) -> None:
  """Restores the frozen backbone weights of `model` from a converted checkpoint, in place."""
  cfg: ModelConfig = model.cfg
  saved = config_from_checkpoint(path)
  if saved.backbone_fields() != cfg.backbone_fields():
    diff = {k: (v, cfg.backbone_fields()[k]) for k, v in saved.backbone_fields().items()
            if cfg.backbone_fields()[k] != v}
    raise CheckpointError(f"{path}: backbone config does not match the model "
                          f"(checkpoint vs model: {json.dumps(diff)})")
  frozen = nnx.state(model, FROZEN)
  shardings = state_shardings(frozen, mesh, rules)
  default = jax.sharding.SingleDeviceSharding(jax.devices()[0])

  def target(var, sh):
    return jax.ShapeDtypeStruct(var.shape, var.dtype, sharding=sh if sh is not None else default)

  abstract = jax.tree.map(target, nnx.to_pure_dict(frozen), nnx.to_pure_dict(shardings),
                          is_leaf=lambda x: x is None or hasattr(x, "shape"))
  restored = read_params(path, abstract)
  nnx.replace_by_pure_dict(frozen, restored)
  nnx.update(model, frozen)


def load_backbone(path: str, *, mesh=None, rules=DEFAULT_RULES, **overrides: Any) -> WanTransformer:
  """The frozen Wan backbone from a converted checkpoint (`python -m wildactor_jax.convert`).

  overrides: ModelConfig fields such as dtype="bfloat16", remat="full", attention="cudnn".
  """
  cfg = config_from_checkpoint(path, **overrides)
  return create_model(cfg, backbone_path=path, mesh=mesh, rules=rules)


def save_backbone(model: WanTransformer, out: str, dtype: str = "float32") -> None:
  """Writes `model`'s frozen weights as a backbone checkpoint (the converter's format: OUT/params
  + OUT/config.json, atomically), e.g. after pre-training or fine-tuning every parameter."""
  params = jax.tree.map(np.asarray, jax.device_get(nnx.to_pure_dict(nnx.state(model, FROZEN))))

  def build(tree):
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
      tree.put(tuple(str(getattr(k, "key", k)) for k in path), leaf)
    return dict(model.cfg.backbone_fields(), kind="wan_transformer",
                rope_max_seq_len=model.cfg.rope_max_seq_len)

  write_checkpoint(out, build, dtype)
