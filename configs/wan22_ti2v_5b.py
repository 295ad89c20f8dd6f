"""The wan22_ti2v_5b backbone alone (no reference branch). arg: mesh preset (default cpu)."""
from wildactor_jax import config_lib


def get_config(arg=None):
  return config_lib.backbone_config("wan22_ti2v_5b", mesh=arg or "cpu")
