"""Ablation: no AIPA. References and video share one symmetric attention over [video; refs] and
the LoRA adapts every token (the paper's "w/o AIPA" row). Otherwise the main WildActor setting.

arg: as configs/wildactor_wan22_5b.py (mesh preset, or "tiny").
"""
from wildactor_jax import config_lib


def get_config(arg=None):
  config = config_lib.sibling_config(__file__, "wildactor_wan22_5b.py", arg)
  config.model.aipa = False
  return config
