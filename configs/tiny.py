"""The tiny backbone alone (no reference branch). arg: mesh preset (default cpu)."""
from wildactor_jax import config_lib


def get_config(arg=None):
  return config_lib.backbone_config("tiny", mesh=arg or "cpu")
