"""python -m wildactor_jax.params --config configs/X.py[:arg]

Prints JSON with parameter counts computed abstractly (shapes only, nothing allocated): total,
frozen (backbone) and trainable (LoRA) parameters, and bytes at the configured parameter dtype.
"""
from __future__ import annotations

import json
import math

import jax
from absl import flags
from flax import nnx
from ml_collections import config_flags

from wildactor_jax import cli
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import FROZEN, abstract_model

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)


def count(cfg: ModelConfig) -> dict:
  model = abstract_model(cfg)
  size = lambda s: sum(math.prod(x.shape) for x in jax.tree.leaves(s))
  frozen, lora = size(nnx.state(model, FROZEN)), size(nnx.state(model, nnx.LoRAParam))
  itemsize = 2 if cfg.param_dtype == "bfloat16" else 4
  return {"total": frozen + lora, "frozen": frozen, "trainable": lora,
          "param_bytes": (frozen + lora) * itemsize, "param_dtype": cfg.param_dtype}


def main(argv):
  del argv
  config = _CONFIG.value
  cfg = ModelConfig.from_mapping(config.model)
  print(json.dumps(dict(count(cfg), model=config.model.get("name", "?"))))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  cli.run_absl(main)
