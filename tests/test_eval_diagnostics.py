"""Sampling-free diagnostics: shuffled references cost loss on a model that copies a colour from
its references; attention mass on references is a probability and vanishes without them."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from wildactor_jax.eval import diagnostics
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import create_model
from wildactor_jax.train_lib.step import flow_loss

CFG = ModelConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, in_channels=4, out_channels=4,
                  text_dim=8, freq_dim=32, lora_rank=4)


def colour_batch(rng, b=8, r=2):
  """Each clip is one flat random colour; its references show the same colour."""
  colour = rng.standard_normal((b, 1, 1, 1, 4)).astype(np.float32)
  return {"video_latents": np.broadcast_to(colour, (b, 2, 4, 4, 4)).copy(),
          "text_embeds": np.zeros((b, 3, 8), np.float32),
          "text_mask": np.ones((b, 3), bool),
          "ref_latents": np.broadcast_to(colour, (b, r, 4, 4, 4)).copy(),
          "ref_type": np.tile(np.array([[0, 1]], np.int32), (b, 1)),
          "ref_mask": np.ones((b, r), bool),
          "clean_frames": np.zeros((b,), np.int32), "task": np.full((b,), 2, np.int32)}


@pytest.fixture(scope="module")
def copier():
  """A tiny model trained (every parameter, a few steps) to copy its references' colour."""
  model = create_model(CFG, seed=0)
  opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt, batch, key):
    k_t, k_n = jax.random.split(key)
    t = jax.random.uniform(k_t, (8,), minval=0.3, maxval=1.0)
    noise = jax.random.normal(k_n, batch["video_latents"].shape)
    loss, grads = nnx.value_and_grad(lambda m: flow_loss(m, batch, t, noise))(model)
    opt.update(model, grads)
    return loss

  rng = np.random.default_rng(0)
  for i in range(80):
    batch = {k: jnp.asarray(v) for k, v in colour_batch(rng).items()}
    step(model, opt, batch, jax.random.key(i))
  return model


def test_shuffled_references_raise_the_loss(copier):
  batches = [colour_batch(np.random.default_rng(100 + i)) for i in range(2)]
  losses = diagnostics.flow_losses(copier, batches, times=(0.9,), seed=0)
  true, shuffled, none = (losses[v]["t=0.9"] for v in ("true", "shuffled", "none"))
  assert true < 0.7 * shuffled, losses
  assert true < none, losses


def test_reference_variants():
  batch = colour_batch(np.random.default_rng(0), b=3)
  shuffled = diagnostics.reference_variant(batch, "shuffled")
  np.testing.assert_array_equal(shuffled["ref_latents"][1], batch["ref_latents"][0])
  np.testing.assert_array_equal(shuffled["video_latents"], batch["video_latents"])
  assert not diagnostics.reference_variant(batch, "none")["ref_mask"].any()
  with pytest.raises(ValueError, match="at least 2"):
    diagnostics.reference_variant(colour_batch(np.random.default_rng(0), b=1), "shuffled")


def test_attention_mass_is_a_probability_per_layer(copier):
  batch = colour_batch(np.random.default_rng(5), b=4)
  mass = diagnostics.attention_mass(copier, [batch], t=0.9)
  assert len(mass) == CFG.num_layers
  assert all(0.0 < m < 1.0 for m in mass), mass
  # Without valid references the mass is exactly zero, layer by layer.
  none = diagnostics.reference_variant(batch, "none")
  refs = diagnostics.References(jnp.asarray(none["ref_latents"]), jnp.asarray(none["ref_type"]),
                                jnp.asarray(none["ref_mask"]))
  raw = diagnostics.reference_attention_mass(
      copier, jnp.asarray(batch["video_latents"]), jnp.full((4,), 900.0),
      jnp.asarray(batch["text_embeds"]), jnp.full((4,), 3, jnp.int32), refs)
  np.testing.assert_array_equal(np.asarray(raw), 0.0)


def test_attention_mass_matches_a_dense_softmax():
  rng = np.random.default_rng(1)
  q, kv, kr = (jnp.asarray(rng.standard_normal(s), jnp.float32)
               for s in [(2, 5, 2, 4), (2, 5, 2, 4), (2, 3, 2, 4)])
  lengths = jnp.asarray([3, 1])
  got = np.asarray(diagnostics._reference_mass(q, kv, kr, lengths))
  for b in range(2):
    k = np.concatenate([np.asarray(kv[b]), np.asarray(kr[b])[:int(lengths[b])]])
    logits = np.einsum("qnd,knd->nqk", np.asarray(q[b]), k) / 2.0
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(got[b], p[..., 5:].sum(-1).mean(), rtol=1e-5)
