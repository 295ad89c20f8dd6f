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
from wildactor_jax.models.vae import init_vae
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


@pytest.fixture(scope="module")
def tiny_model():
  cfg = ModelConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_channels=C,
                    out_channels=C, text_dim=D, freq_dim=16, lora=False)
  return create_model(cfg, seed=0)


@pytest.fixture(scope="module")
def causal_vae():
  """The Wan VAE port (models/vae.py), tiny, random weights: 8x spatial, 4x causal temporal."""
  return init_vae(dict(base_dim=8, z_dim=C, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                       temperal_downsample=[False, True, True]), seed=0)


def smooth_video(frames, size, seed):
  """A clip in [-1, 1] that changes from frame to frame (a causal VAE's latents then differ)."""
  rng = np.random.default_rng(seed)
  walk = np.cumsum(rng.standard_normal((frames, size, size, 3)) * 0.3, axis=0)
  return np.tanh(walk).astype(np.float32)


def test_a_continued_window_starts_from_a_training_prefix_under_the_causal_vae(
    causal_vae, tiny_model, monkeypatch):
  """The seam, with the real causal VAE: training's clean prefix is a clip's first K latents
  (latent 0 = the VAE's single-frame latent); a continued window is given exactly that for the
  clip that starts at the video's last 1 + 4 (K - 1) frames, keeps it clean, and the frames it
  adds are what its latents decode to after that context."""
  vae, k = causal_vae, 2
  clip = smooth_video(13, 16, seed=1)                   # a training clip: 13 frames, 4 latents
  prefix = np.asarray(vae.encode(clip[None]))[:, :k]    # what a continue example holds clean
  # The causal VAE: a clip's first K latents are the encoding of its first 1 + 4 (K - 1) frames.
  np.testing.assert_allclose(continuation.encode_clip(vae, clip[:5]), prefix, atol=1e-5)
  earlier = smooth_video(8, 16, seed=2)
  video = np.concatenate([earlier, clip[:5]])           # the video so far ends with them
  # What continuing from the video's last K latent frames fed the model (a 4-frame latent in
  # latent 0's place): not a training prefix.
  chain = np.asarray(vae.encode(video[None]))
  assert not np.allclose(chain[:, -k:], prefix, atol=1e-2)
  windows = []
  sample = inference.sample_latents
  monkeypatch.setattr(inference, "sample_latents",
                      lambda *a, **kw: windows.append(sample(*a, **kw)) or windows[-1])
  s = inference.GenerationSettings(frames=9, height=16, width=16, steps=2, cfg=1.0)
  ext = continuation.Extender(tiny_model, vae, None, s, (3, 2, 2), seed=0)
  out = ext.extend(video, jnp.zeros((2, S, D)), new=4, context_frames=k)
  assert len(ext.contexts) == ext.windows == 1 and out.shape == (17, 16, 16, 3)
  np.testing.assert_allclose(ext.contexts[0], prefix, atol=1e-5)
  latents = windows[0][0]
  np.testing.assert_array_equal(latents[:, :k], ext.contexts[0])  # kept clean, bit for bit
  np.testing.assert_array_equal(out[:13], video)                  # the video's own frames
  decoded = continuation.decode_chain(vae, latents)               # context decoded, then new
  np.testing.assert_allclose(out[13:], decoded[5:], atol=1e-6)
  assert not np.allclose(out[13:], decoded[1:5], atol=1e-3)       # not the context's frames


def test_extender_grows_a_video_window_by_window(causal_vae, tiny_model):
  s = inference.GenerationSettings(frames=9, height=16, width=16, steps=2, cfg=1.0)
  model, text = tiny_model, jnp.zeros((2, S, D))
  video = smooth_video(3, 16, seed=3)  # shorter than 2 latents' 5 frames: 1 latent of context
  ext = continuation.Extender(model, causal_vae, None, s, (3, 2, 2), seed=0)
  out = ext.extend(video, text, new=11, context_frames=2)
  # Windows of 3 latents: the first has 1 of context (8 new frames), the next 2 (4 new, 3 kept).
  assert out.shape == (14, 16, 16, 3) and ext.windows == 2
  assert [c.shape[1] for c in ext.contexts] == [1, 2]
  np.testing.assert_array_equal(out[:3], video)
  np.testing.assert_allclose(ext.contexts[1], continuation.encode_clip(causal_vae, out[-8:-3]),
                             atol=1e-6)  # the second window started from the first's frames
  again = continuation.Extender(model, causal_vae, None, s, (3, 2, 2), seed=0)
  np.testing.assert_array_equal(again.extend(video, text, 11, 2), out)
  with pytest.raises(ValueError, match="expected 1 .. 2"):
    ext.extend(video, text, 1, 3)
  with pytest.raises(ValueError, match=r"expected \(N >= 1, 16, 16, 3\)"):
    ext.extend(video[:, :8], text, 1, 1)


def test_last_frames_copies_only_the_tail():
  parts = [np.full((n, 1), i) for i, n in enumerate((3, 1, 2))]
  assert continuation.last_frames(parts, 4)[:, 0].tolist() == [0, 1, 2, 2]
  assert continuation.last_frames(parts, 9)[:, 0].tolist() == [0, 0, 0, 1, 2, 2]
  assert continuation.context_latents(3, 2) == 1 and continuation.context_latents(5, 2) == 2
