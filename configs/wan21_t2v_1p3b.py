"""The wan21_t2v_1p3b backbone alone (no reference branch). arg: mesh preset (default cpu)."""
from wildactor_jax import config_lib


def get_config(arg=None):
  return config_lib.backbone_config("wan21_t2v_1p3b", mesh=arg or "cpu")
