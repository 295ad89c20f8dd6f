"""The jitted distillation step: critic updates, then one generator update.

    state, metrics = step(frozen, state, batch)

frozen: the teacher's weights (backbone + identity LoRA), shared by the three models:
  teacher = frozen, its guided velocity the real score;
  student = frozen + step LoRA (state["lora"]), sampled in `steps` Euler steps ("fewstep");
  critic  = frozen + its own LoRA (state["critic"]), the fake score.
Per step: the batch's reference K/V are computed once (they depend on neither the video, t, nor
the video adapters: one cache serves all three models); then `critic_updates` times: a student
sample without gradient (backward simulation: k < steps student steps from noise, then its clean
estimate at step k), the critic's flow-matching loss on it, an AdamW update; then the generator
update, either DMD (`mode="dmd"`: the normalised real-minus-fake gradient at a random noise level
on the student's graded estimate, dmd.py) or the regression warm start (`mode="regression"`: the
graded estimate against the teacher's own sampler run from the same noise). Only forward passes
and reverse-mode gradients (no JVPs), so every attention kernel and mesh of `train` works.
The conditioning prefix of i2v / continuation examples stays clean throughout (t = 0 there) and
out of every loss, as in training.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from wildactor_jax import inference, sampling
from wildactor_jax.distill import dmd
from wildactor_jax.distill.setup import Parts
from wildactor_jax.models.transformer import References
from wildactor_jax.sharding import activation_sharding
from wildactor_jax.train_lib import flow, step as step_lib

MODES = ("dmd", "regression")


class Recipe(NamedTuple):
  """The numbers a step closes over (static)."""
  student_table: sampling.Coefficients   # the student's few-step Euler schedule
  teacher_table: sampling.Coefficients   # the teacher's sampler (regression pairs)
  teacher_scales: np.ndarray             # its guidance scale per step
  real_cfg: float                        # the teacher's guidance scale for the real score
  cfg_interval: tuple[float, float]
  guide_references: bool
  sample_shift: float                    # DMD noise levels' shift
  flow_shift: float                      # the critic's flow-matching times' shift
  dmd_range: tuple[float, float]
  critic_updates: int
  null_text: np.ndarray                  # (S, D) the empty prompt's states


class Conditioning(NamedTuple):
  text: jax.Array       # (B, S, D)
  text2: jax.Array      # (2B, S, D) [prompt; empty prompt]
  cache: Any            # reference K/V (or References without AIPA)
  cache2: Any           # the same for the guided batch of 2B
  clean: jax.Array      # (B,) clean latent frames
  context: jax.Array    # (B, T, H, W, C): the clean prefix's values (the batch's latents)
  weights: jax.Array    # (B, T) loss weights: 0 on the clean prefix


def conditioning(teacher, batch: dict, recipe: Recipe) -> Conditioning:
  cfg = teacher.cfg
  refs = References(batch["ref_latents"].astype(cfg.jnp_dtype), batch["ref_type"],
                    batch["ref_mask"])
  x = batch["video_latents"]
  tokens = (x.shape[1] // cfg.patch_size[0], x.shape[2] // cfg.patch_size[1],
            x.shape[3] // cfg.patch_size[2])
  cache = jax.lax.stop_gradient(teacher.encode_references(refs, tokens)) if cfg.aipa else refs
  text = batch["text_embeds"].astype(cfg.jnp_dtype)
  null = jnp.broadcast_to(jnp.asarray(recipe.null_text, text.dtype), text.shape)
  return Conditioning(text, jnp.concatenate([text, null]), cache,
                      inference.guidance_cache(cache, recipe.guide_references),
                      batch["clean_frames"], x.astype(jnp.float32),
                      flow.loss_frame_weights(batch["clean_frames"], x.shape[1]))


def initial_noise(key, c: Conditioning) -> jax.Array:
  return dmd.impose_clean(jax.random.normal(key, c.context.shape, jnp.float32), c.context, c.clean)


def rollout(student, x: jax.Array, k: jax.Array, c: Conditioning, table) -> jax.Array:
  """k student steps from x (the sampler's Euler updates, prefix re-imposed), no gradient."""

  def body(i, x):
    row = jax.tree.map(lambda a: a[i], table)
    v = inference.model_velocity(student, x, row.timestep, c.text, c.cache, c.clean)
    x = sampling.solver_step((x, x, x, x), row, v)[0]  # Euler: only p x + q m is used
    return dmd.impose_clean(x, c.context, c.clean)

  return jax.lax.stop_gradient(jax.lax.fori_loop(0, k, body, x))


def graded_estimate(student, x_k: jax.Array, k: jax.Array, c: Conditioning, table) -> jax.Array:
  """The student's clean estimate at its step k (the sample it would commit to), prefix clean."""
  row = jax.tree.map(lambda a: a[k], table)
  v = inference.model_velocity(student, x_k, row.timestep, c.text, c.cache, c.clean)
  return dmd.impose_clean(dmd.clean_estimate(x_k, row.sigma, v), c.context, c.clean)


def teacher_sample(teacher, noise: jax.Array, c: Conditioning, recipe: Recipe) -> jax.Array:
  """The teacher's own guided sampler from `noise` (an ODE pair's endpoint), no gradient."""
  table = sampling.coefficient_table(recipe.teacher_table)
  scales = jnp.asarray(recipe.teacher_scales, jnp.float32)

  def body(state, xs):
    row, scale = xs
    v = inference.guided_velocity(teacher, state[0], row.timestep, c.text2, c.cache2, scale,
                                  c.clean)
    state = sampling.solver_step(state, row, v)
    return (dmd.impose_clean(state[0], c.context, c.clean),) + tuple(state[1:]), None

  state, _ = jax.lax.scan(body, sampling.initial_state(noise), (table, scales))
  return jax.lax.stop_gradient(state[0])


def make_step(parts: Parts, recipe: Recipe, mesh, rules, mode: str) -> Callable:
  """The un-jitted step (`jit_step` adds shardings and donation)."""
  if mode not in MODES:
    raise ValueError(f"distillation step mode {mode!r}: expected one of {MODES}")
  table = sampling.coefficient_table(recipe.student_table)
  steps = len(recipe.student_table.sigma)
  merge = lambda graph, frozen, lora=None: (nnx.merge(graph, frozen) if lora is None
                                            else nnx.merge(graph, frozen, lora))

  def student_sample(frozen, lora, c, key):
    """(x_k, k, noise): the backward-simulated input of a random graded step, no gradient."""
    k_key, n_key = jax.random.split(key)
    noise = initial_noise(n_key, c)
    k = dmd.rollout_index(k_key, steps)
    student = merge(parts.student_graph, frozen, jax.lax.stop_gradient(lora))
    return rollout(student, noise, k, c, table), k, noise

  def critic_update(frozen, lora, c, batch, carry, key):
    critic, opt = carry
    s_key, t_key, e_key = jax.random.split(key, 3)
    x_k, k, _ = student_sample(frozen, lora, c, s_key)
    student = merge(parts.student_graph, frozen, jax.lax.stop_gradient(lora))
    x0 = jax.lax.stop_gradient(graded_estimate(student, x_k, k, c, table))
    t = flow.sample_timesteps(t_key, x0.shape[0], recipe.flow_shift)
    noise = jax.random.normal(e_key, x0.shape, jnp.float32)
    fake_batch = dict(batch, video_latents=x0, text_embeds=c.text)
    cache = None if isinstance(c.cache, References) else c.cache

    def loss_fn(critic):
      return step_lib.flow_loss(merge(parts.student_graph, frozen, critic), fake_batch, t, noise,
                                reference_cache=cache)

    loss, grads = jax.value_and_grad(loss_fn)(critic)
    updates, opt = parts.tx_critic.update(grads, opt, critic)
    return (optax.apply_updates(critic, updates), opt), (loss, optax.tree.norm(grads))

  def dmd_grads(frozen, lora, critic, c, key):
    s_key, n_key, e_key = jax.random.split(key, 3)
    x_k, k, _ = student_sample(frozen, lora, c, s_key)
    x0, pullback = jax.vjp(
        lambda lora: graded_estimate(merge(parts.student_graph, frozen, lora), x_k, k, c, table),
        lora)
    x0_sg = jax.lax.stop_gradient(x0)
    b, t_len = x0.shape[0], x0.shape[1]
    sigma = dmd.noise_levels(n_key, b, *recipe.dmd_range, recipe.sample_shift)
    eps = jax.random.normal(e_key, x0.shape, jnp.float32)
    x_noisy = flow.interpolate(x0_sg, eps, flow.frame_timesteps(sigma, t_len, c.clean))
    timestep = flow.model_timesteps(sigma)
    teacher = merge(parts.teacher_graph, frozen)
    scales = dmd.guidance_scales(sigma, recipe.real_cfg, recipe.cfg_interval)
    v_real = inference.guided_velocity(teacher, x_noisy, timestep, c.text2, c.cache2, scales,
                                       c.clean)
    v_fake = inference.model_velocity(merge(parts.student_graph, frozen, critic), x_noisy,
                                      timestep, c.text, c.cache, c.clean)
    g = jax.lax.stop_gradient(dmd.dmd_gradient(x0_sg, dmd.clean_estimate(x_noisy, sigma, v_real),
                                               dmd.clean_estimate(x_noisy, sigma, v_fake),
                                               c.weights))
    loss, d_x0 = jax.value_and_grad(lambda x: dmd.dmd_loss(x, g, c.weights))(x0_sg)
    return loss, pullback(d_x0)[0]

  def regression_grads(frozen, lora, c, key):
    s_key, _ = jax.random.split(key)
    x_k, k, noise = student_sample(frozen, lora, c, s_key)
    target = teacher_sample(merge(parts.teacher_graph, frozen), noise, c, recipe)

    def loss_fn(lora):
      x0 = graded_estimate(merge(parts.student_graph, frozen, lora), x_k, k, c, table)
      return flow.weighted_mse(x0, target, c.weights)

    return jax.value_and_grad(loss_fn)(lora)

  def step(frozen, state, batch):
    with activation_sharding(mesh, rules):
      rng, key = jax.random.split(jax.random.wrap_key_data(state["rng"]))
      c_key, g_key = jax.random.split(key)
      c = conditioning(merge(parts.teacher_graph, frozen), batch, recipe)
      lora = state["lora"]
      (critic, critic_opt), (critic_losses, critic_norms) = jax.lax.scan(
          lambda carry, k: critic_update(frozen, lora, c, batch, carry, k),
          (state["critic"], state["opt"]["critic"]),
          jax.random.split(c_key, recipe.critic_updates))
      if mode == "dmd":
        loss, grads = dmd_grads(frozen, lora, critic, c, g_key)
      else:
        loss, grads = regression_grads(frozen, lora, c, g_key)
      updates, gen_opt = parts.tx_generator.update(grads, state["opt"]["generator"], lora)
      lora = optax.apply_updates(lora, updates)
    grad_norm = optax.tree.norm(grads)
    critic_loss, critic_norm = jnp.mean(critic_losses), jnp.mean(critic_norms)
    metrics = {"loss": loss, "critic_loss": critic_loss, "grad_norm": grad_norm,
               "critic_grad_norm": critic_norm,
               "learning_rate": parts.schedule(state["step"]),
               "finite": (jnp.isfinite(loss) & jnp.isfinite(grad_norm)
                          & jnp.isfinite(critic_loss) & jnp.isfinite(critic_norm))}
    new_state = {"step": state["step"] + 1, "lora": lora, "critic": critic,
                 "opt": {"generator": gen_opt, "critic": critic_opt},
                 "rng": jax.random.key_data(rng)}
    return new_state, metrics

  return step


def jit_step(step: Callable, parts: Parts, abstract_batch: dict, mesh, rules):
  """jax.jit with explicit in/out shardings; the distillation state (argument 1) is donated."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  names = ("loss", "critic_loss", "grad_norm", "critic_grad_norm", "learning_rate", "finite")
  batch_sh = step_lib.batch_shardings(abstract_batch, mesh, rules)
  return jax.jit(step, in_shardings=(parts.setup.frozen_shardings, parts.shardings, batch_sh),
                 out_shardings=(parts.shardings, {k: replicated for k in names}),
                 donate_argnums=(1,))
