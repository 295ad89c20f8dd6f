"""Continuation: clean-prefix training examples, the sampler keeping its context bit-identical
(the model seeing it at t = 0, only the new frames denoised), and `generate --continue-from`."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from wildactor_jax import inference, sampling
from wildactor_jax.infer import continuation
from wildactor_jax.input import random_source, schema
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import create_model
from wildactor_jax.models.pixel_autoencoder import PixelAutoencoder
from wildactor_jax.train_lib import flow

C, S, D = 12, 4, 8


def test_clean_prefix_counts_frames_and_leaves_them_out_of_the_loss():
  t = jnp.array([0.7, 0.3, 0.5])
  clean = jnp.array([2, 0, 1], jnp.int32)
  np.testing.assert_allclose(flow.frame_timesteps(t, 3, clean),
                             [[0, 0, 0.7], [0.3, 0.3, 0.3], [0, 0.5, 0.5]], rtol=1e-6)
  np.testing.assert_array_equal(flow.loss_frame_weights(clean, 3), [[0, 0, 1], [1, 1, 1], [0, 1, 1]])
  # A bool still means one clean frame (i2v), as before.
  np.testing.assert_array_equal(flow.loss_frame_weights(jnp.array([True, False]), 2),
                                [[0, 1], [1, 1]])


@pytest.mark.parametrize("with_refs", [True, False])
def test_random_continue_examples_have_a_clean_prefix(with_refs):
  shapes = schema.example_shapes(ml_collections.ConfigDict(dict(
      data=dict(frames=13, height=64, width=64, r_max=3, text_len=6), model=dict(text_dim=D),
      vae=dict(kind="pixel", spatial_factor=4), backbone="tiny")))
  seen = set()
  for i in range(40):
    ex = random_source.make_example(shapes, {"continue": 1.0}, 0, "train", i, (2, with_refs))
    assert ex["task"] == schema.CONTINUE
    seen.add(int(ex["clean_frames"]))
    assert bool(ex["ref_mask"].any()) == with_refs
  assert seen == {1, 2}
  i2v = random_source.make_example(shapes, {"i2v": 1.0}, 0, "train", 0)
  assert i2v["clean_frames"] == 1 and not i2v["ref_mask"].any()
  with pytest.raises(ValueError, match="context_frames"):
    schema.continue_options({"context_frames": 0})


SEEN_TIMESTEPS = []


class SpyModel(nnx.Module):
  """Records the timesteps it is given (in SEEN_TIMESTEPS); the velocity of each frame is half
  its own values plus the mean of all frames (so the new frames depend on the context)."""

  class cfg:
    jnp_dtype = jnp.float32
    in_channels = C

  def __call__(self, x, t, text, reference_cache=None):
    jax.debug.callback(lambda tt: SEEN_TIMESTEPS.append(np.asarray(tt)), t)
    return 0.5 * x + x.mean(axis=1, keepdims=True)


@pytest.mark.parametrize("solver", sampling.SOLVERS)
def test_sampler_keeps_the_context_bit_identical_and_at_t0(solver):
  s = inference.GenerationSettings(frames=13, height=8, width=8, steps=4, shift=3.0, cfg=2.0,
                                   solver=solver)
  noise = jax.random.normal(jax.random.key(0), (1, 4, 2, 2, C))
  context = jax.random.normal(jax.random.key(1), (1, 2, 2, 2, C)) * 3.0
  text = jnp.zeros((2, S, D))
  SEEN_TIMESTEPS.clear()
  out = inference.denoise(SpyModel(), text, None, noise, s, context=context)
  np.testing.assert_array_equal(np.asarray(out[:, :2]), np.asarray(context))
  assert len(SEEN_TIMESTEPS) == s.steps
  for t in SEEN_TIMESTEPS:   # (2, T): the cond/uncond batch, context frames at t = 0
    assert t.shape == (2, 4) and (t[:, :2] == 0).all() and (t[:, 2:] > 0).all()
  other = inference.denoise(SpyModel(), text, None, noise, s, context=context + 1.0)
  assert not np.allclose(out[:, 2:], other[:, 2:])  # the new frames read the context
  with pytest.raises(ValueError, match="0 < K < 4"):
    inference.denoise(SpyModel(), text, None, noise, s, context=jnp.zeros((1, 4, 2, 2, C)))


def test_extender_grows_a_chain_window_by_window_on_a_real_model():
  cfg = ModelConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_channels=C,
                    out_channels=C, text_dim=D, freq_dim=16, lora=False)
  model = create_model(cfg, seed=0)
  s = inference.GenerationSettings(frames=9, height=16, width=16, steps=2, cfg=1.0)
  grid = (3, 8, 8)
  text = jnp.zeros((2, S, D))
  chain = np.random.default_rng(0).standard_normal((1, 2, 8, 8, C)).astype(np.float32)
  ext = continuation.Extender(model, None, s, grid, seed=0)
  out = ext.extend(chain, text, new=5, context_frames=2)  # windows of 1 new frame: 5 windows
  assert out.shape == (1, 7, 8, 8, C) and ext.windows == 5
  np.testing.assert_array_equal(out[:, :2], chain)
  again = continuation.Extender(model, None, s, grid, seed=0).extend(chain, text, 5, 2)
  np.testing.assert_array_equal(out, again)
  with pytest.raises(ValueError, match="expected 1 .. 2"):
    ext.extend(chain, text, 1, 3)


def test_new_frames_join_a_decoded_chain_without_a_seam():
  vae = PixelAutoencoder(2)
  chain = np.random.default_rng(0).standard_normal((1, 6, 4, 4, 12)).astype(np.float32)
  whole = continuation.decode_chain(vae, chain)
  assert len(whole) == continuation.frames_of(6) == 21
  tail = continuation.new_frames(vae, chain, old=4)
  np.testing.assert_array_equal(tail, whole[continuation.frames_of(4):])
