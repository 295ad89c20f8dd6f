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


def test_guidance_interval_guides_only_the_steps_inside_it():
  """sample.cfg_interval: the scale is cfg for steps whose sigma lies in [lo, hi], 1 elsewhere;
  the full interval is plain guidance and an empty one is no guidance, exactly."""
  import jax
  from flax import nnx
  from wildactor_jax import inference

  class TextModel(nnx.Module):  # cond and uncond differ only through their text rows
    class cfg:
      jnp_dtype = jnp.float32

    def __call__(self, x, t, text, reference_cache=None):
      return 0.3 * x + text.mean(axis=(1, 2))[:, None, None, None, None]

  noise = jax.random.normal(jax.random.key(0), (1, 2, 2, 2, 3))
  text = jnp.stack([jnp.ones((4, 5)), jnp.zeros((4, 5))])
  base = dict(frames=5, height=4, width=4, steps=6, shift=3.0, cfg=4.0, solver="euler")
  run = lambda **kw: np.asarray(inference.denoise(
      TextModel(), text, None, noise, inference.GenerationSettings(**{**base, **kw})))
  sigma = sampling.coefficients("euler", 6, 3.0).sigma
  scales = inference.guidance_scales(inference.GenerationSettings(**base, cfg_interval=(0.5, 1.0)),
                                     sigma)
  np.testing.assert_array_equal(scales, np.where(sigma >= 0.5, 4.0, 1.0))
  assert 0 < (scales == 4.0).sum() < 6
  np.testing.assert_array_equal(run(cfg_interval=(0.0, 1.0)), run())
  np.testing.assert_array_equal(run(cfg_interval=(0.0, 0.0)), run(cfg=1.0))
  partial = run(cfg_interval=(0.5, 1.0))
  assert not np.allclose(partial, run()) and not np.allclose(partial, run(cfg=1.0))
  with pytest.raises(ValueError, match="cfg_interval"):
    run(cfg_interval=(0.8, 0.2))
