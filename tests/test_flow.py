"""Rectified-flow math (train_lib/flow.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from wildactor_jax.train_lib import flow


def test_shift_fixes_endpoints_and_moves_mass_to_noise():
  t = jnp.linspace(0.0, 1.0, 11)
  s = flow.shift_timesteps(t, 5.0)
  np.testing.assert_allclose([s[0], s[-1]], [0.0, 1.0], atol=1e-7)
  assert bool(jnp.all(s[1:-1] > t[1:-1]))                     # shift > 1: noisier
  np.testing.assert_allclose(flow.shift_timesteps(t, 1.0), t, atol=1e-7)
  np.testing.assert_allclose(flow.shift_timesteps(jnp.float32(0.5), 5.0), 5 / 6, rtol=1e-6)
  u = flow.sample_timesteps(jax.random.key(0), 4096, 5.0)
  assert u.shape == (4096,) and bool(jnp.all((u >= 0) & (u < 1)))
  # P(t' < x) = P(t < x / (s - (s - 1) x)): median of t' is the shift of 0.5.
  np.testing.assert_allclose(jnp.median(u), 5 / 6, atol=0.02)


def test_clean_first_frame_has_t0_and_no_loss():
  t = jnp.array([0.7, 0.3])
  clean = jnp.array([True, False])
  tf = flow.frame_timesteps(t, 3, clean)
  np.testing.assert_allclose(tf, [[0.0, 0.7, 0.7], [0.3, 0.3, 0.3]], rtol=1e-6)
  x0 = jax.random.normal(jax.random.key(1), (2, 3, 2, 2, 4))
  eps = jax.random.normal(jax.random.key(2), x0.shape)
  xt = flow.interpolate(x0, eps, tf)
  np.testing.assert_array_equal(xt[0, 0], x0[0, 0])          # the conditioning frame stays data
  np.testing.assert_allclose(xt[1], 0.7 * x0[1] + 0.3 * eps[1], rtol=1e-5, atol=1e-6)
  w = flow.loss_frame_weights(clean, 3)
  np.testing.assert_array_equal(w, [[0, 1, 1], [1, 1, 1]])
  v = flow.velocity_target(x0, eps)
  np.testing.assert_allclose(v, eps - x0, rtol=1e-6)
  # An error only on the excluded frame costs nothing; elsewhere it counts per element.
  bad = v.at[0, 0].add(100.0)
  assert float(flow.weighted_mse(bad, v, w)) == 0.0
  bad = v.at[1, 2].add(1.0)
  np.testing.assert_allclose(flow.weighted_mse(bad, v, w), 16 / (5 * 16), rtol=1e-6)
  np.testing.assert_allclose(flow.model_timesteps(tf)[0], [0.0, 700.0, 700.0], rtol=1e-6)


def test_person_tokens_weigh_person_weight_times_the_background():
  """token_weights: the person's tokens weigh w, others 1, excluded frames 0; the mean is over
  the weights, so weight 1 is the plain loss and a unit error on the person alone costs
  w / (w n_person + n_background) per channel-summed token."""
  x0 = jax.random.normal(jax.random.key(3), (2, 3, 2, 2, 4))
  clean = jnp.array([1, 0])
  frames = flow.loss_frame_weights(clean, 3)
  person = jnp.zeros((2, 3, 2, 2), bool).at[:, :, 0, 0].set(True)  # one token per frame
  np.testing.assert_array_equal(flow.token_weights(frames, person, 1.0),
                                jnp.broadcast_to(frames[:, :, None, None], person.shape))
  w = flow.token_weights(frames, person, 5.0)
  assert float(w[0, 0].sum()) == 0.0 and float(w[1, 0, 0, 0]) == 5.0 and float(w[1, 0, 1, 1]) == 1.0
  bad = x0.at[1, 2, 0, 0].add(1.0)   # a unit error in each channel of one person token
  # Counted frames: 2 + 3 = 5, each 1 person token (5) + 3 background tokens (1), 4 channels.
  np.testing.assert_allclose(flow.weighted_mse(bad, x0, w), 5 * 4 / (5 * (5 + 3) * 4), rtol=1e-6)
  np.testing.assert_allclose(flow.weighted_mse(bad, x0, flow.token_weights(frames, person, 1.0)),
                             flow.weighted_mse(bad, x0, frames), rtol=1e-6)
  off = x0.at[1, 2, 1, 1].add(1.0)   # the same error on a background token costs 5 times less
  np.testing.assert_allclose(flow.weighted_mse(bad, x0, w), 5 * flow.weighted_mse(off, x0, w),
                             rtol=1e-6)
