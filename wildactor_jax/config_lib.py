"""Building blocks for experiment configs (`configs/*.py`): backbone presets, mesh presets.

One experiment, one file: each `configs/X.py` has `get_config(arg)` and composes these pieces;
everything can be overridden on the command line (`--config.model.remat=full`).
"""
from __future__ import annotations

import dataclasses

import ml_collections

from wildactor_jax.models.config import ModelConfig
from wildactor_jax.sharding import DEFAULT_RULES

# The released Wan configs, diffusers WanTransformer3DModel naming (docs/method.md s.2).
BACKBONES = {
    "wan22_ti2v_5b": dict(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_channels=48,
                          out_channels=48),
    "wan21_t2v_1p3b": dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_channels=16,
                           out_channels=16),
    "wan21_t2v_14b": dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_channels=16,
                          out_channels=16),
    # CPU tests and the demo: same structure, toy sizes (head_dim 32 keeps I-RoPE's 3 parts).
    "tiny": dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2, in_channels=48, out_channels=48,
                 text_dim=32, freq_dim=32),
}

# VAE geometry per backbone family (temporal, spatial factor, latent channels).
VAE_GEOMETRY = {"wan22_ti2v_5b": (4, 16, 48), "wan21_t2v_1p3b": (4, 8, 16),
                "wan21_t2v_14b": (4, 8, 16), "tiny": (4, 16, 48)}

def vae_geometry(config) -> tuple[int, int, int]:
  """(temporal factor, spatial factor, latent channels) of the config's autoencoder: the pixel
  autoencoder (space-to-depth by config.vae.spatial_factor) or the CPU demo's learned one
  (models/video_autoencoder.py: 4 x 8 x 8, config.vae.z_dim channels), else the Wan VAE of the
  backbone family."""
  vae = config.get("vae")
  if vae is not None and vae.get("kind") == "pixel":
    s = int(vae.get("spatial_factor", 4))
    return 4, s, 3 * s * s
  if vae is not None and vae.get("kind") == "learned":
    from wildactor_jax.models import video_autoencoder
    return video_autoencoder.TEMPORAL, video_autoencoder.SPATIAL, int(vae.get("z_dim", 16))
  name = config.model.get("name", "")
  if name not in VAE_GEOMETRY:
    raise ValueError(f"config.model.name {name!r}: expected one of {sorted(VAE_GEOMETRY)}")
  return VAE_GEOMETRY[name]


# Mesh presets: (data, fsdp, context, tensor); -1 takes the remaining devices.
MESHES = {
    "cpu": (1, -1, 1, 1),
    "v5p-64": (1, 32, 1, 1),     # v5p-N counts TensorCores: 32 chips (jax devices), 95 GiB each
    "v6e-64": (1, 32, 2, 1),     # 32 GiB chips: FSDP x context parallel for the long sequence
    "v5e-4": (1, 4, 1, 1),
    "8xh100": (1, 8, 1, 1),
}


def model_config(backbone: str, **overrides) -> ml_collections.ConfigDict:
  """config.model for a backbone preset: ModelConfig's defaults, the preset, then `overrides`."""
  if backbone not in BACKBONES:
    raise ValueError(f"backbone {backbone!r}: expected one of {sorted(BACKBONES)}")
  # The defaults are ModelConfig's (the one place they are written), then the backbone preset.
  defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
  cfg = ml_collections.ConfigDict(dict(name=backbone, **defaults))
  cfg.update(BACKBONES[backbone])
  cfg.update(overrides)
  return cfg


def mesh_config(preset: str = "cpu") -> ml_collections.ConfigDict:
  if preset not in MESHES:
    raise ValueError(f"mesh preset {preset!r}: expected one of {sorted(MESHES)}")
  return ml_collections.ConfigDict(dict(
      preset=preset, shape=MESHES[preset], axes=("data", "fsdp", "context", "tensor"),
      rules=tuple((name, axes) for name, axes in DEFAULT_RULES)))


def backbone_config(backbone: str, mesh: str = "cpu") -> ml_collections.ConfigDict:
  """A plain backbone experiment (no reference branch): model + mesh."""
  config = ml_collections.ConfigDict()
  config.model = model_config(backbone)
  config.mesh = mesh_config(mesh)
  return config


def sibling_config(this_file: str, name: str, arg=None) -> ml_collections.ConfigDict:
  """get_config(arg) of another file in this config's folder (configs/ is not a package)."""
  import os
  path = os.path.join(os.path.dirname(os.path.abspath(this_file)), name)
  return load_config_file(path + (f":{arg}" if arg else ""))


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """'configs/x.py[:arg]' -> get_config(arg), as `--config` flags do (for non-absl tools)."""
  import importlib.util
  import os
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"--config {spec}: no such file {path}")
  module_spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)
