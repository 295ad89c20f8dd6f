"""Flow-ODE samplers (Euler and UniPC-bh2) as precomputed linear multistep coefficients.

The schedule is Wan's: sigmas = linspace(1, 1/1000, N + 1)[:-1], shifted
s' = shift * s / (1 + (shift - 1) * s), then a final 0; the model sees t = int(1000 * s')
(diffusers casts timesteps to int64). With a velocity model v = eps - x0, the data prediction is
m = x - s v. "fewstep" is the schedule of step-distilled students (wildactor_jax/distill): Euler
at sigmas linspace(1, 0, N + 1)[:-1] shifted, e.g. N = 4: timesteps [1000, 750, 500, 250] before
the shift (the Self-Forcing / LightX2V recipe for Wan), exactly the points the student learnt.

Both solvers are linear in the current sample, the previous sample and the last three data
predictions, with coefficients that depend only on the (static) schedule. We compute them once
in float64 numpy, so the sampling loop is one `jax.lax.scan` of a model call plus a few axpys:
    corrector (UniPC, steps > 0): x <- keep x + a x_prev + b m1 + c (m2 - m1) + d (m - m1)
    predictor:                    x_next <- p x + q m + r (m1 - m)
where m is this step's data prediction and m1, m2 the previous two. UniPC's coefficients follow
diffusers' `UniPCMultistepScheduler` (order 2, bh2, predict_x0, lower_order_final), which Wan
uses; the tests check the two agree.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SOLVERS = ("euler", "unipc", "fewstep")
TIMESTEP_SCALE = 1000.0  # the model's timestep for flow time sigma is floor(1000 sigma)


def flow_sigmas(steps: int, shift: float, num_train_timesteps: int = 1000) -> np.ndarray:
  """(steps + 1,) float64 sigmas from ~1 down to 0, shifted as Wan."""
  if steps < 1:
    raise ValueError(f"steps {steps}: expected at least 1")
  s = np.linspace(1.0, 1.0 / num_train_timesteps, steps + 1)[:-1]
  s = shift * s / (1.0 + (shift - 1.0) * s)
  if abs(s[0] - 1.0) < 1e-6:  # keeps log(sigma) finite in UniPC's first steps (as diffusers)
    s[0] -= 1e-6
  return np.concatenate([s, [0.0]]).astype(np.float32).astype(np.float64)


def fewstep_sigmas(steps: int, shift: float) -> np.ndarray:
  """(steps + 1,) float64 sigmas of a step-distilled student: linspace(1, 0, steps + 1) (the
  timesteps 1000, 1000 (N - 1) / N, ...) shifted as Wan, ending at 0."""
  if steps < 1:
    raise ValueError(f"steps {steps}: expected at least 1")
  s = np.linspace(1.0, 0.0, steps + 1)
  s = shift * s / (1.0 + (shift - 1.0) * s)
  return s.astype(np.float32).astype(np.float64)


class Coefficients(NamedTuple):
  sigma: np.ndarray      # (N,) sigma of each step's input
  timestep: np.ndarray   # (N,) model timestep (0..1000)
  keep: np.ndarray       # corrector: x <- keep x + a x_prev + b m1 + c (m2 - m1) + d (m - m1)
  a: np.ndarray
  b: np.ndarray
  c: np.ndarray
  d: np.ndarray
  p: np.ndarray          # predictor: x_next <- p x + q m + r (m1 - m)
  q: np.ndarray
  r: np.ndarray


def _lam(sigma):
  with np.errstate(divide="ignore"):
    return np.log(1.0 - sigma) - np.log(sigma)


def _unipc_predictor(sig, i, order):
  lt, l0 = _lam(sig[i + 1]), _lam(sig[i])
  hh = -(lt - l0)
  h_phi_1 = np.expm1(hh)
  p = sig[i + 1] / sig[i]
  q = -(1.0 - sig[i + 1]) * h_phi_1
  r = 0.0
  if order == 2:  # rho_p = 0.5, D1 = (m1 - m) / rk
    rk = (_lam(sig[i - 1]) - l0) / (lt - l0)
    r = -(1.0 - sig[i + 1]) * np.expm1(hh) * 0.5 / rk
  return p, q, r


def _unipc_corrector(sig, i, order):
  """Coefficients correcting step i's sample using m (this step) and m1, m2 (earlier)."""
  lt, l0 = _lam(sig[i]), _lam(sig[i - 1])
  h = lt - l0
  hh = -h
  h_phi_1, b_h = np.expm1(hh), np.expm1(hh)
  alpha_t = 1.0 - sig[i]
  a = sig[i] / sig[i - 1]
  b = -alpha_t * h_phi_1
  if order == 1:
    return a, b, 0.0, -alpha_t * b_h * 0.5
  rk = (_lam(sig[i - 2]) - l0) / h
  h_phi_k = h_phi_1 / hh - 1.0
  rhs = [h_phi_k / b_h]
  h_phi_k = h_phi_k / hh - 0.5
  rhs.append(h_phi_k * 2.0 / b_h)
  rho = np.linalg.solve(np.array([[1.0, 1.0], [rk, 1.0]]), np.array(rhs))
  return a, b, -alpha_t * b_h * rho[0] / rk, -alpha_t * b_h * rho[1]


def coefficients(solver: str, steps: int, shift: float) -> Coefficients:
  if solver not in SOLVERS:
    raise ValueError(f"solver {solver!r}: expected one of {SOLVERS}")
  sig = fewstep_sigmas(steps, shift) if solver == "fewstep" else flow_sigmas(steps, shift)
  n = steps
  z = lambda: np.zeros(n)
  keep, a, b, c, d, p, q, r = np.ones(n), z(), z(), z(), z(), z(), z(), z()
  for i in range(n):
    if solver in ("euler", "fewstep"):  # x + (s_next - s) v with v = (x - m) / s
      ratio = (sig[i + 1] - sig[i]) / sig[i]
      p[i], q[i] = 1.0 + ratio, -ratio
      continue
    order = min(2, n - i, i + 1)  # warm-up and lower_order_final, as diffusers
    p[i], q[i], r[i] = _unipc_predictor(sig, i, order)
    if i > 0:
      prev_order = min(2, n - (i - 1), i)
      keep[i] = 0.0
      a[i], b[i], c[i], d[i] = _unipc_corrector(sig, i, prev_order)
  timestep = np.floor(sig[:-1] * TIMESTEP_SCALE)
  return Coefficients(sig[:-1], timestep, keep, a, b, c, d, p, q, r)


def coefficient_table(coeffs: Coefficients) -> Coefficients:
  """The coefficients as float32 device arrays, one row per denoising step."""
  return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), coeffs)


def initial_state(noise: jax.Array):
  """Solver state (x, x_prev, m1, m2) at the first step."""
  x = noise.astype(jnp.float32)
  return (x, jnp.zeros_like(x), jnp.zeros_like(x), jnp.zeros_like(x))


def data_prediction(x: jax.Array, sigma, velocity: jax.Array) -> jax.Array:
  """The one-step clean-data estimate m = x - sigma v that every solver step builds on."""
  return x.astype(jnp.float32) - sigma * velocity.astype(jnp.float32)


def solver_step(state, co: Coefficients, velocity: jax.Array):
  """One denoising step given this step's model velocity at state[0] and timestep co.timestep."""
  x, x_prev, m1, m2 = state
  m = data_prediction(x, co.sigma, velocity)
  x = co.keep * x + co.a * x_prev + co.b * m1 + co.c * (m2 - m1) + co.d * (m - m1)
  x_next = co.p * x + co.q * m + co.r * (m1 - m)
  return (x_next, x, m, m1)


def impose_prefix(state, context: jax.Array):
  """The solver state with its sample's first K latent frames set to `context` (1, K, ...):
  continuation keeps its clean context exactly. Every solver update is elementwise, so the
  context frames' own (meaningless) updates never reach the other frames; only the model reads
  them."""
  x = state[0]
  return (x.at[:, :context.shape[1]].set(context.astype(x.dtype)),) + tuple(state[1:])


def sample(velocity_fn: Callable[[jax.Array, jax.Array], jax.Array], noise: jax.Array,
           coeffs: Coefficients) -> jax.Array:
  """Integrates the flow ODE from noise (sigma ~1) to data (sigma 0) in one scan.

  velocity_fn(x, timestep) -> v, with timestep a float32 scalar in 0..1000 (guidance, references
  and text are closed over by the caller).
  """

  def step(state, co):
    return solver_step(state, co, velocity_fn(state[0], co.timestep)), None

  state, _ = jax.lax.scan(step, initial_state(noise), coefficient_table(coeffs))
  return state[0]


def guided(velocity_fn: Callable, cfg_scale: float) -> Callable:
  """Classifier-free guidance on one batched pass: velocity_fn(x2, t) takes [x; x] and returns
  [v_cond; v_uncond]; the result is v_uncond + cfg_scale * (v_cond - v_uncond)."""

  def fn(x, t):
    v = velocity_fn(jnp.concatenate([x, x], axis=0), t)
    v_cond, v_uncond = jnp.split(v, 2, axis=0)
    return v_uncond + cfg_scale * (v_cond - v_uncond)

  return fn
