"""Rectified flow, the training math as pure jnp functions.

    x_t = (1 - t) x_0 + t eps,  target v = eps - x_0,  loss = || f(x_t, t, c) - v ||^2

t is the flow time in [0, 1] (0 = clean data, 1 = pure noise); the model sees 1000 t (diffusers'
timestep scale). Training draws t uniformly and warps it with Wan's shift s,
t' = s t / (1 + (s - 1) t), which moves mass towards the noisy end (s = 5 for Wan2.x).
I2V and continuation samples keep a prefix of latent frames clean (I2V: the first frame;
continuation: the last 1..K frames of the previous segment, placed first): those frames get t = 0
(so x_t = x_0 there), and they are excluded from the loss, since predicting a velocity for given
data teaches nothing. The sampler marks the context of a continued clip the same way.

Optionally (train.person_loss_weight w != 1) the latent tokens the person covers weigh w times a
background token (`token_weights`): at small scale the person is a few tokens of the grid, and
identity is learned only where the loss looks. Evaluation losses stay unweighted.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

TIMESTEP_SCALE = 1000.0


def shift_timesteps(t: jax.Array, shift: float) -> jax.Array:
  """Wan's timestep shift t' = s t / (1 + (s - 1) t); identity for s = 1, fixes 0 and 1."""
  return shift * t / (1.0 + (shift - 1.0) * t)


def sample_timesteps(key: jax.Array, batch: int, shift: float) -> jax.Array:
  """(batch,) flow times: uniform in [0, 1) then shifted."""
  return shift_timesteps(jax.random.uniform(key, (batch,), jnp.float32), shift)


def clean_prefix(clean_frames: jax.Array, num_frames: int) -> jax.Array:
  """(B,) clean-prefix lengths (int; a bool counts as 0 or 1 frame) -> (B, T) bool, True on the
  clean leading latent frames."""
  n = jnp.asarray(clean_frames).astype(jnp.int32)
  return jnp.arange(num_frames)[None, :] < n[:, None]


def frame_timesteps(t: jax.Array, num_frames: int, clean_frames: jax.Array) -> jax.Array:
  """(B,) sample times -> (B, T) per latent frame; the first clean_frames[b] frames get t = 0."""
  per_frame = jnp.broadcast_to(t[:, None], (t.shape[0], num_frames))
  return jnp.where(clean_prefix(clean_frames, num_frames), 0.0, per_frame)


def loss_frame_weights(clean_frames: jax.Array, num_frames: int) -> jax.Array:
  """(B, T) float weights: 1 for frames in the loss, 0 for the clean conditioning prefix."""
  return jnp.where(clean_prefix(clean_frames, num_frames), 0.0, 1.0)


def interpolate(x0: jax.Array, noise: jax.Array, t_frames: jax.Array) -> jax.Array:
  """x_t = (1 - t) x0 + t eps with per-frame t (B, T) broadcast over (B, T, H, W, C)."""
  t = t_frames[:, :, None, None, None].astype(jnp.float32)
  return ((1.0 - t) * x0.astype(jnp.float32) + t * noise.astype(jnp.float32))


def velocity_target(x0: jax.Array, noise: jax.Array) -> jax.Array:
  """v = eps - x0, the constant velocity of the straight path from data to noise."""
  return noise.astype(jnp.float32) - x0.astype(jnp.float32)


def token_weights(frame_weights: jax.Array, person_mask: jax.Array,
                  person_weight: float) -> jax.Array:
  """(B, T) frame weights and a (B, T, H, W) person mask -> (B, T, H, W) token weights: the
  person's tokens weigh person_weight, the others 1, frames out of the loss 0."""
  person = 1.0 + (person_weight - 1.0) * person_mask.astype(jnp.float32)
  return frame_weights[:, :, None, None] * person


def weighted_mse(pred: jax.Array, target: jax.Array, weights: jax.Array) -> jax.Array:
  """Weighted mean squared error over the video elements of the whole batch (float32 scalar).

  weights: (B, T) per latent frame or (B, T, H, W) per token, shared by the token's channels.
  The mean is over the weight's sum, so every counted element of weight 1 weighs the same and a
  sample with a clean first frame contributes T - 1 frames, not a re-normalised T. The
  denominator is at least one element.
  """
  err = jnp.sum(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)), axis=-1)
  w = weights.astype(jnp.float32).reshape(weights.shape + (1,) * (err.ndim - weights.ndim))
  w = jnp.broadcast_to(w, err.shape)  # (B, T, H, W)
  return jnp.sum(err * w) / jnp.maximum(jnp.sum(w) * pred.shape[-1], 1.0)


def model_timesteps(t_frames: jax.Array) -> jax.Array:
  """Flow time in [0, 1] -> the model's 0..1000 timestep scale."""
  return t_frames * TIMESTEP_SCALE
