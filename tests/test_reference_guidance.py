"""Guidance over references (sample.guide_references): the unconditional branch is exactly the
backbone on the empty prompt, the conditional one the model with its references; the symmetric
(no-AIPA) ablation, which cannot cache reference K/V, samples with the references themselves."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wildactor_jax import inference
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import create_model
from wildactor_jax.models.transformer import References

BASE = dict(dim=64, ffn_dim=96, num_heads=2, num_layers=2, in_channels=8, out_channels=8,
            text_dim=16, freq_dim=32, lora_rank=4)


def make(aipa: bool):
  model = create_model(ModelConfig(**BASE, aipa=aipa), seed=0)
  lora = nnx.state(model, nnx.LoRAParam)  # non-zero LoRA-B: the references' branch acts
  nnx.update(model, jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(3),
                                                                        x.shape), lora))
  return model


def inputs():
  rng = np.random.default_rng(0)
  f = lambda *s: jnp.asarray(rng.standard_normal(s, dtype=np.float32))
  x, text = f(1, 2, 4, 4, 8), f(2, 5, 16)
  refs = References(f(1, 2, 4, 4, 8), jnp.asarray([[0, 1]], jnp.int32), jnp.ones((1, 2), bool))
  return x, text, refs


@pytest.mark.parametrize("aipa", [True, False])
def test_branches_of_guidance(aipa):
  model = make(aipa)
  x, text, refs = inputs()
  cache = model.encode_references(refs, (2, 2, 2)) if aipa else refs
  t = jnp.full((1,), 500.0)
  with_refs = lambda prompt, mask=refs.mask: model(x, t, prompt,
                                                   references=refs._replace(mask=mask))
  for guide in (True, False):
    cache2 = inference.guidance_cache(cache, guide)
    uncond = inference.guided_velocity(model, x, 500.0, text, cache2, 0.0)
    cond = inference.guided_velocity(model, x, 500.0, text, cache2, 1.0)
    np.testing.assert_allclose(cond, with_refs(text[:1]), atol=2e-5)
    if not guide:
      expected = with_refs(text[1:])
    elif aipa:  # no valid reference: exactly the backbone
      expected = model(x, t, text[1:])
    else:  # the symmetric model adapts every token once references are passed, as in training
      expected = with_refs(text[1:], jnp.zeros((1, 2), bool))
    np.testing.assert_allclose(uncond, expected, atol=2e-5)
  assert not np.allclose(with_refs(text[1:]), model(x, t, text[1:]), atol=1e-3)


class _Text:
  """A deterministic stand-in text encoder: states from a hash of the prompt."""

  def encode(self, prompts):
    states = [np.random.default_rng(abs(hash(p)) % 2**32).standard_normal((5, 16)) for p in prompts]
    return np.stack(states).astype(np.float32), np.ones((len(prompts), 5), bool)


@pytest.mark.parametrize("aipa, cfg, solver", [(True, 4.0, "unipc"), (False, 4.0, "unipc"),
                                                (True, 1.0, "fewstep")])
def test_batched_generation_is_each_clip_alone(aipa, cfg, solver):
  """The benchmark's batched sampler: every clip as `generate` makes it alone (its own prompt,
  references, count of references, none included, and seed); guided, and unguided as a
  few-step student samples (one conditional pass per step: each clip's own prompt)."""
  from wildactor_jax.models.pixel_autoencoder import PixelAutoencoder
  model = create_model(ModelConfig(**dict(BASE, in_channels=12, out_channels=12), aipa=aipa))
  nnx.update(model, jax.tree.map(lambda x: x + 0.05, nnx.state(model, nnx.LoRAParam)))
  vae, text = PixelAutoencoder(2), _Text()
  rng = np.random.default_rng(1)
  img = lambda: rng.uniform(-1, 1, (8, 8, 3)).astype(np.float32)
  jobs = [("a walk", [img(), img()], [0, 1], 3), ("a wave", [], [], 4), ("a jump", [img()], [1], 3)]
  s = inference.GenerationSettings(frames=5, height=8, width=8, steps=3, cfg=cfg, shift=3.0,
                                   solver=solver, guide_references=True)
  prompts, images, types, seeds = ([j[k] for j in jobs] for k in range(4))
  batch = inference.generate_batch(model, vae, text, prompts, images, types, s, seeds)
  for (prompt, images, types, seed), video in zip(jobs, batch):
    alone, _ = inference.generate(model, vae, text, prompt, images, types,
                                  inference.GenerationSettings(**{**s.__dict__, "seed": seed}))
    np.testing.assert_allclose(video, alone, atol=2e-4)
  assert not np.allclose(batch[0], batch[2], atol=1e-2)  # same seed, other prompt and refs


@pytest.mark.parametrize("aipa", [True, False])
def test_batched_continuation_is_each_clip_alone(aipa):
  """The benchmark's first-frame condition: each clip of a batch continues from its OWN clean
  leading latent frame, exactly as `generate(..., context=)` continues it alone (the symmetric
  model also splits the batch by references: each part keeps its rows' frames)."""
  from wildactor_jax.models.pixel_autoencoder import PixelAutoencoder
  model = create_model(ModelConfig(**dict(BASE, in_channels=12, out_channels=12), aipa=aipa))
  nnx.update(model, jax.tree.map(lambda x: x + 0.05, nnx.state(model, nnx.LoRAParam)))
  vae, text = PixelAutoencoder(2), _Text()
  rng = np.random.default_rng(2)
  img = lambda: rng.uniform(-1, 1, (8, 8, 3)).astype(np.float32)
  jobs = [("a walk", [img()], [1], 3), ("a wave", [], [], 3), ("a jump", [img(), img()], [0, 1], 5)]
  context = rng.standard_normal((len(jobs), 1, 4, 4, 12)).astype(np.float32)
  s = inference.GenerationSettings(frames=5, height=8, width=8, steps=3, cfg=4.0, shift=3.0,
                                   guide_references=True)
  prompts, images, types, seeds = ([j[k] for j in jobs] for k in range(4))
  batch = inference.generate_batch(model, vae, text, prompts, images, types, s, seeds, context)
  for i, (prompt, imgs, kinds, seed) in enumerate(jobs):
    alone, _ = inference.generate(model, vae, text, prompt, imgs, kinds,
                                  inference.GenerationSettings(**{**s.__dict__, "seed": seed}),
                                  context=context[i:i + 1])
    np.testing.assert_allclose(batch[i], alone, atol=2e-4)
  plain = inference.generate_batch(model, vae, text, prompts, images, types, s, seeds)
  assert not np.allclose(batch[0], plain[0], atol=1e-2)  # the frame is used
  with pytest.raises(ValueError, match="one row per clip"):
    inference.generate_batch(model, vae, text, prompts, images, types, s, seeds, context[:2])
