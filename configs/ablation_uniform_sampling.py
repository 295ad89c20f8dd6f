"""Ablation: no angular decay in the reference sampler (config.data.sampler = "uniform"), the one
change from the default. The frontal de-biasing start weights are their own switch and stay on;
add --config.data.debias=False as well for references drawn uniformly from each clip's pool, the
paper's random reference sampling (paper: body consistency 0.865 vs 0.952).

arg: as configs/wildactor_wan22_5b.py (mesh preset, or "tiny").
"""
from wildactor_jax import config_lib


def get_config(arg=None):
  config = config_lib.sibling_config(__file__, "wildactor_wan22_5b.py", arg)
  config.data.sampler = "uniform"
  return config
