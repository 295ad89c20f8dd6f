"""The sampler reads out what training taught: a briefly trained tiny model's one-step data
prediction (the quantity every solver step builds on, through `inference.predict_x0`, the code path
`generate` uses) reconstructs a training clip better than the noisy input does.

A timestep-scale, shift or sign mismatch between the training objective and the sampler fails
here: the estimate is then no better than the noisy input (or worse)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from wildactor_jax import inference
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import create_model
from wildactor_jax.train_lib import flow
from wildactor_jax.train_lib.step import flow_loss

T, H, W, C, S, D = 2, 8, 8, 8, 6, 32


def clip() -> np.ndarray:
  """A smooth, structured latent clip (1, T, H, W, C) in about [-1, 1]."""
  t, y, x, c = np.meshgrid(np.arange(T), np.arange(H), np.arange(W), np.arange(C), indexing="ij")
  return (np.sin(0.7 * x + 0.3 * c) * np.cos(0.5 * y - 0.2 * t) * 0.8)[None].astype(np.float32)


def train_briefly(x0: jax.Array, text: jax.Array, steps: int = 120):
  cfg = ModelConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, in_channels=C,
                    out_channels=C, text_dim=D, freq_dim=32, lora=False)
  model = create_model(cfg, seed=0)
  graphdef, params = nnx.split(model, nnx.Param)
  tx = optax.adam(3e-3)
  opt = tx.init(params)
  b = 4
  batch = {"video_latents": jnp.broadcast_to(x0, (b,) + x0.shape[1:]),
           "clean_frames": jnp.zeros((b,), jnp.int32),
           "text_embeds": jnp.broadcast_to(text, (b, S, D)),
           "text_mask": jnp.ones((b, S), bool),
           "ref_latents": jnp.zeros((b, 1, H, W, C)), "ref_type": jnp.zeros((b, 1), jnp.int32),
           "ref_mask": jnp.zeros((b, 1), bool)}

  @jax.jit
  def step(params, opt, key):
    kt, kn = jax.random.split(key)
    t = flow.sample_timesteps(kt, b, 3.0)
    noise = jax.random.normal(kn, batch["video_latents"].shape)
    loss, g = jax.value_and_grad(
        lambda p: flow_loss(nnx.merge(graphdef, p), batch, t, noise))(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  key = jax.random.key(0)
  for _ in range(steps):
    key, k = jax.random.split(key)
    params, opt, _ = step(params, opt, k)
  return nnx.merge(graphdef, params)


def test_one_step_prediction_reconstructs_a_training_clip():
  x0 = jnp.asarray(clip())
  text = jax.random.normal(jax.random.key(1), (1, S, D))
  model = train_briefly(x0, text)
  text2 = jnp.concatenate([text, jnp.zeros_like(text)])
  for sigma in (0.3, 0.6, 0.9):
    noise = jax.random.normal(jax.random.key(int(sigma * 10)), x0.shape)
    x = (1.0 - sigma) * x0 + sigma * noise
    estimate = inference.predict_x0(model, x, sigma, text2)
    err_estimate = float(jnp.mean((estimate - x0) ** 2))
    err_noisy = float(jnp.mean((x - x0) ** 2))
    assert err_estimate < 0.5 * err_noisy, (sigma, err_estimate, err_noisy)
