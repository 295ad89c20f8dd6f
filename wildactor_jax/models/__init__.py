"""Models: the Wan video DiT backbone, the WildActor identity branch, the Wan VAE, UMT5.

    from wildactor_jax import models
    model = models.load_backbone(path)            # converted Wan transformer
    vae = models.load_vae(path)                   # .encode(video) / .decode(latents)
    text = models.load_text_encoder(path, tok)    # .encode(list_of_prompts)
"""


def load_backbone(path, **kwargs):
  from wildactor_jax.models.loading import load_backbone as _load
  return _load(path, **kwargs)


def load_vae(path, **kwargs):
  from wildactor_jax.models.vae import load_vae as _load
  return _load(path, **kwargs)


def load_text_encoder(path, tokenizer_path=None, **kwargs):
  from wildactor_jax.models.umt5 import load_text_encoder as _load
  return _load(path, tokenizer_path, **kwargs)
