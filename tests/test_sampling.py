"""Our flow samplers against diffusers' schedulers (the ones Wan pipelines use)."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from wildactor_jax import sampling


def toy_velocity_np(x, t):
  return np.tanh(x) * (t / 1000.0) + 0.3 * x - 0.1


@pytest.mark.parametrize("steps", [1, 2, 3, 10])
def test_unipc_matches_diffusers(steps):
  from diffusers import UniPCMultistepScheduler
  sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                  flow_shift=5.0, num_train_timesteps=1000, solver_order=2)
  sched.set_timesteps(steps)
  x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
  xt = torch.from_numpy(x.copy())
  for t in sched.timesteps:
    v = torch.from_numpy(toy_velocity_np(xt.numpy(), float(t)).astype(np.float32))
    xt = sched.step(v, t, xt, return_dict=False)[0]
  co = sampling.coefficients("unipc", steps, 5.0)
  np.testing.assert_array_equal(co.timestep, sched.timesteps.numpy().astype(np.float64))
  ours = sampling.sample(lambda x, t: jnp.tanh(x) * (t / 1000.0) + 0.3 * x - 0.1,
                         jnp.asarray(x), co)
  np.testing.assert_allclose(ours, xt.numpy(), rtol=1e-4, atol=1e-4)


def test_euler_is_explicit_euler_on_the_schedule():
  sig = sampling.flow_sigmas(4, 3.0)
  x = np.random.default_rng(1).standard_normal((5,))
  expected = x.copy()
  for i in range(4):
    expected = expected + (sig[i + 1] - sig[i]) * toy_velocity_np(expected, np.floor(sig[i] * 1000))
  ours = sampling.sample(lambda x, t: jnp.tanh(x) * (t / 1000.0) + 0.3 * x - 0.1,
                         jnp.asarray(x, jnp.float32), sampling.coefficients("euler", 4, 3.0))
  np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_exact_for_a_straight_flow():
  # Rectified flow's ideal case: x_t = (1 - t) x0 + t eps has constant v = eps - x0.
  x0, eps = np.full((3,), 2.0, np.float32), np.array([0.5, -1.0, 0.0], np.float32)
  for solver in sampling.SOLVERS:
    out = sampling.sample(lambda x, t: jnp.asarray(eps - x0), jnp.asarray(eps),
                          sampling.coefficients(solver, 7, 5.0))
    np.testing.assert_allclose(out, x0, atol=1e-4)


def test_guidance_combines_cond_and_uncond():
  fn = sampling.guided(lambda x, t: jnp.concatenate([x[:1] * 0 + 3.0, x[1:] * 0 + 1.0]), 5.0)
  np.testing.assert_allclose(fn(jnp.zeros((1, 2)), 0.0), np.full((1, 2), 11.0))


def test_bad_solver_and_steps():
  with pytest.raises(ValueError, match="expected one of"):
    sampling.coefficients("dpm", 5, 5.0)
  with pytest.raises(ValueError, match="at least 1"):
    sampling.flow_sigmas(0, 5.0)
