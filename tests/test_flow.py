"""Rectified-flow math (train_lib/flow.py) and the analytic FLOP count (train_lib/flops.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wildactor_jax.models.config import ModelConfig
from wildactor_jax.train_lib import flops, flow


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


def test_flops_lora_step_is_about_twice_forward_plus_attention():
  cfg = ModelConfig(lora_rank=128)  # Wan2.2-5B
  f = flops.train_step_flops(cfg, batch=1, video_tokens=9360, ref_tokens=2340, text_tokens=512,
                             timestep_groups=24)
  # frozen matmuls x2, attention x3: between 2x and 3x the forward, far below 6N-style 3x + dW.
  assert 2.0 < f["train"] / f["forward"] < 3.0
  # Dense part: ~2 x 2 N FLOPs per token for the ~5B backbone (N counts the 30 blocks).
  block_params = 30 * (4 * 3072**2 + 2 * 3072 * 14336)
  per_token_dense = 2 * block_params
  assert per_token_dense * 11700 < f["forward"] < 3 * per_token_dense * 11700


def test_chip_lookup_and_mfu():
  assert flops.chip_spec("TPU v5 lite")[0] == 197.0
  assert flops.chip_spec("TPU v5")[0] == 459.0
  assert flops.chip_spec("TPU v6 lite")[0] == 918.0
  assert flops.chip_spec("NVIDIA H100 80GB HBM3")[0] == 989.0
  assert flops.chip_spec("cpu") is None
  u = flops.utilisation(459e12 * 4 * 0.5, 1.0, 4, "TPU v5")
  assert u["mfu"] == pytest.approx(0.5)
  assert flops.utilisation(1e12, 1.0, 1, "cpu")["mfu"] is None
