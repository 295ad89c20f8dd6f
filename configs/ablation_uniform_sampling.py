"""Ablation: uniform reference sampling. References are drawn uniformly from each clip's pool
instead of viewpoint-adaptive Monte Carlo sampling (paper: body consistency 0.865 vs 0.952).

arg: as configs/wildactor_wan22_5b.py (mesh preset, or "tiny").
"""
import importlib.util
import os


def _main_config(arg):
  """configs/wildactor_wan22_5b.py's get_config (loaded by path: configs/ is not a package)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wildactor_wan22_5b.py")
  spec = importlib.util.spec_from_file_location("wildactor_wan22_5b", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def get_config(arg=None):
  config = _main_config(arg)
  config.data.sampler = "uniform"
  return config
