"""Ablation: no I-RoPE. References reuse the video's position range instead of their identity-aware
temporal offsets (the paper's "w/o I-RoPE" row). Otherwise the main WildActor setting.

arg: as configs/wildactor_wan22_5b.py (mesh preset, or "tiny").
"""
from wildactor_jax import config_lib


def get_config(arg=None):
  config = config_lib.sibling_config(__file__, "wildactor_wan22_5b.py", arg)
  config.model.irope = False
  return config
