"""Distribution-matching distillation, the math as pure jnp functions (no models here).

Flow time sigma in [0, 1] (0 clean), x_sigma = (1 - sigma) x0 + sigma eps, a velocity model's
clean estimate x0 = x - sigma v. The student samples in N steps at fixed sigmas (sampling's
"fewstep" schedule); DMD (Yin et al., "One-step Diffusion with Distribution Matching
Distillation", CVPR 2024) moves its samples x0_gen along the difference of two scores of the
noised sample x = (1 - sigma) x0_gen + sigma eps at a random noise level sigma: the real score
(the frozen teacher, with its classifier-free guidance) and the fake score (a critic trained on
the student's own samples). In clean-estimate form the gradient on x0_gen is

    g = (x0_fake - x0_real) / mean |x0_gen - x0_real|          (per sample, DMD's normaliser)

and the generator loss 0.5 || x0_gen - sg(x0_gen - g) ||^2 has exactly g (over the element
count) as its gradient. DMD2 (Yin et al., "Improved Distribution Matching Distillation for Fast
Image Synthesis", NeurIPS 2024) drops DMD's mandatory regression loss, trains the critic several
times per generator update (two time-scale rule) and trains a multi-step student on its own
intermediate samples ("backward simulation": run the student k < N steps without gradient, then
take the graded step k), which Self-Forcing (Huang et al., 2025) and LightX2V use for Wan.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from wildactor_jax.train_lib import flow


def rollout_index(key: jax.Array, steps: int) -> jax.Array:
  """The graded step k, uniform in 0 .. steps - 1 (int32 scalar, shared by the batch)."""
  return jax.random.randint(key, (), 0, steps, jnp.int32)


def noise_levels(key: jax.Array, batch: int, lo: float, hi: float, shift: float) -> jax.Array:
  """(batch,) DMD noise levels: u uniform in [lo, hi], shifted as Wan (flow.shift_timesteps)."""
  u = jax.random.uniform(key, (batch,), jnp.float32, lo, hi)
  return flow.shift_timesteps(u, shift)


def impose_clean(x: jax.Array, clean: jax.Array, clean_frames: jax.Array) -> jax.Array:
  """x (B, T, ...) with each sample's first clean_frames[b] latent frames taken from `clean`
  (the conditioning prefix of i2v / continuation examples stays exactly as given)."""
  prefix = flow.clean_prefix(clean_frames, x.shape[1])
  return jnp.where(prefix.reshape(prefix.shape + (1,) * (x.ndim - 2)), clean.astype(x.dtype), x)


def clean_estimate(x: jax.Array, sigma: jax.Array, velocity: jax.Array) -> jax.Array:
  """x0 = x - sigma v with sigma a scalar or per sample (B,)."""
  sigma = jnp.asarray(sigma, jnp.float32)
  s = sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim)) if sigma.ndim else sigma
  return x.astype(jnp.float32) - s * velocity.astype(jnp.float32)


def _per_sample_mean(a: jax.Array, frame_weights: jax.Array) -> jax.Array:
  """(B,) mean of a (B, T, H, W, C) over each sample's weighted frames."""
  per_frame = jnp.sum(a, axis=(2, 3, 4))
  count = jnp.sum(frame_weights, axis=1) * (a.shape[2] * a.shape[3] * a.shape[4])
  return jnp.sum(per_frame * frame_weights, axis=1) / jnp.maximum(count, 1.0)


def dmd_gradient(x0_gen: jax.Array, x0_real: jax.Array, x0_fake: jax.Array,
                 frame_weights: jax.Array, eps: float = 1e-6) -> jax.Array:
  """DMD's normalised gradient on the student's sample, zero on unweighted (clean) frames."""
  x0_gen, x0_real = x0_gen.astype(jnp.float32), x0_real.astype(jnp.float32)
  norm = _per_sample_mean(jnp.abs(x0_gen - x0_real), frame_weights)
  g = (x0_fake.astype(jnp.float32) - x0_real) / jnp.maximum(norm, eps)[:, None, None, None, None]
  return g * frame_weights[:, :, None, None, None]


def dmd_loss(x0_gen: jax.Array, grad: jax.Array, frame_weights: jax.Array) -> jax.Array:
  """0.5 || x0_gen - sg(x0_gen - grad) ||^2 over the weighted elements: its gradient with
  respect to x0_gen is grad / (weighted element count), its value 0.5 mean(grad^2)."""
  target = jax.lax.stop_gradient(x0_gen - grad)
  return 0.5 * flow.weighted_mse(x0_gen, target, frame_weights)


def guidance_scales(sigma: jax.Array, cfg: float, interval: tuple[float, float]) -> jax.Array:
  """(B, 1, 1, 1, 1) guidance scale per sample: cfg where its sigma lies in the interval, else
  1 (the teacher's sampler rule, inference.guidance_scales)."""
  lo, hi = interval
  inside = (sigma >= lo) & (sigma <= hi)
  return jnp.where(inside, cfg, 1.0).astype(jnp.float32)[:, None, None, None, None]
