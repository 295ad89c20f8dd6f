"""The autoencoder and text encoder an experiment config names (config.vae, config.text_encoder),
as `encode`, `generate` and the demo load them."""
from __future__ import annotations


def vae_from_config(config, sharding=None):
  """The autoencoder named by config.vae: "wan" (converted), "learned" (the CPU demo's small
  learned video autoencoder, a .npz) or "pixel" (parameter-free, tests)."""
  from wildactor_jax import models
  kind = config.vae.kind
  if kind == "learned":
    from wildactor_jax.models import video_autoencoder
    if not config.vae.get("path"):
      raise ValueError("config.vae.path: expected the learned autoencoder's .npz")
    vae = video_autoencoder.load(config.vae.path)
    want = int(config.vae.get("z_dim", vae.z_dim))
    if vae.z_dim != want:
      raise ValueError(f"config.vae.path {config.vae.path}: {vae.z_dim} latent channels, "
                       f"config.vae.z_dim is {want}")
    return vae
  if kind == "pixel":
    from wildactor_jax.models.pixel_autoencoder import PixelAutoencoder
    return PixelAutoencoder(int(config.vae.get("spatial_factor", 4)),
                            float(config.vae.get("latents_mean", 0.0)),
                            float(config.vae.get("latents_std", 1.0)))
  if kind == "wan":
    if not config.vae.get("path"):
      raise ValueError("config.vae.path: expected a converted Wan VAE checkpoint folder")
    return models.load_vae(config.vae.path, sharding=sharding)
  raise ValueError(f"config.vae.kind {kind!r}: expected 'wan', 'learned' or 'pixel'")


def text_encoder_from_config(config):
  """UMT5 from config.text_encoder.{path, tokenizer_path, max_length}."""
  from wildactor_jax import models
  if not config.text_encoder.get("path"):
    raise ValueError("config.text_encoder.path: expected a converted UMT5 checkpoint folder")
  return models.load_text_encoder(config.text_encoder.path,
                                  config.text_encoder.get("tokenizer_path") or None,
                                  text_len=int(config.text_encoder.get("max_length", 512)))
