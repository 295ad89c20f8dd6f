"""Ablation: uniform reference sampling. References are drawn uniformly from each clip's pool
instead of viewpoint-adaptive Monte Carlo sampling (paper: body consistency 0.865 vs 0.952).

arg: as configs/wildactor_wan22_5b.py (mesh preset, or "tiny").
"""
from wildactor_jax import config_lib


def get_config(arg=None):
  config = config_lib.sibling_config(__file__, "wildactor_wan22_5b.py", arg)
  config.data.sampler = "uniform"
  return config
