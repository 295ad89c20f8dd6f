"""The jitted train and eval steps.

train_step(frozen, train_state, batch) -> (train_state, metrics): rectified flow on the video
tokens with Wan-shifted timesteps, per-frame timesteps so I2V and continuation samples keep a
clean prefix of latent frames (t = 0, excluded from the loss; batch key `clean_frames`),
references clean (the model runs them at t = 0), gradients for the LoRA state only, clipped
AdamW. The train state is donated; shardings are explicit.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from wildactor_jax.models import rope as rope_lib
from wildactor_jax.models.transformer import References
from wildactor_jax.sharding import activation_sharding
from wildactor_jax.train_lib import flow
from wildactor_jax.input.batches import batch_sharding
from wildactor_jax.train_lib.state import Setup


def flow_loss(model, batch: dict, t: jax.Array, noise: jax.Array,
              video_positions: jax.Array | None = None, reference_cache=None,
              person_weight: float = 1.0) -> jax.Array:
  """The rectified-flow loss of `model` on `batch` at sample times t (B,) with noise `noise`
  (and the video tokens' RoPE positions, default the grid's own). reference_cache: the batch's
  reference K/V (`encode_references`), used instead of running its references again.
  person_weight: the weight of the tokens in batch["person_mask"] (`flow.token_weights`)."""
  x0 = batch["video_latents"]
  num_frames = x0.shape[1]
  t_frames = flow.frame_timesteps(t, num_frames, batch["clean_frames"])
  x_t = flow.interpolate(x0, noise, t_frames)
  refs = {"reference_cache": reference_cache} if reference_cache is not None else {
      "references": References(batch["ref_latents"], batch["ref_type"], batch["ref_mask"])}
  # Wan's text convention, the same as the sampler's: states zero past the prompt, every
  # position attended (no text mask), so the model sees exactly what generation gives it.
  pred = model(x_t, flow.model_timesteps(t_frames), batch["text_embeds"], **refs,
               video_positions=video_positions)
  weights = flow.loss_frame_weights(batch["clean_frames"], num_frames)
  if person_weight != 1.0:
    weights = flow.token_weights(weights, batch["person_mask"], person_weight)
  return flow.weighted_mse(pred, flow.velocity_target(x0, noise), weights)


def drop_text(key: jax.Array, text_embeds: jax.Array, null_text: jax.Array | None,
              rate: float) -> jax.Array:
  """Prompt dropout for classifier-free guidance: each sample's prompt states become the empty
  prompt's (`null_text` (S, D), what the sampler's unconditional branch sees) with prob. `rate`."""
  if rate <= 0.0:
    return text_embeds
  drop = jax.random.bernoulli(key, rate, (text_embeds.shape[0],))
  null = jnp.broadcast_to(null_text.astype(text_embeds.dtype), text_embeds.shape)
  return jnp.where(drop[:, None, None], null, text_embeds)


def jittered_positions(key: jax.Array, model, latents: jax.Array, rate: float,
                       temporal_range: int) -> jax.Array:
  """Video RoPE positions for a batch: each example's are randomised
  (`rope.jittered_video_positions`) with probability `rate`, else the grid's own."""
  cfg = model.cfg
  b, t, h, w, _ = latents.shape
  grid = (t // cfg.patch_size[0], h // cfg.patch_size[1], w // cfg.patch_size[2])
  k_pick, k_pos = jax.random.split(key)
  plain = jnp.asarray(rope_lib.video_positions(*grid))
  plain = jnp.broadcast_to(plain, (b,) + plain.shape)
  jittered = rope_lib.jittered_video_positions(k_pos, b, grid, temporal_range)
  pick = jax.random.bernoulli(k_pick, rate, (b,))
  return jnp.where(pick[:, None, None], jittered, plain)


def make_train_step(setup: Setup, tx: optax.GradientTransformation, schedule, shift: float,
                    mesh, rules, *, text_dropout: float = 0.0,
                    null_text: jax.Array | None = None, position_jitter: float = 0.0,
                    jitter_temporal_range: int = 0, person_weight: float = 1.0) -> Callable:
  """The un-jitted step; `jit_train_step` adds shardings and donation. position_jitter: the
  share of examples whose video RoPE positions are randomised (`jittered_positions`; a toy
  backbone's pre-training, see configs/demo_tiny.py). person_weight: train.person_loss_weight,
  the weight of the person's latent tokens in the loss (`flow.token_weights`)."""
  if not person_weight > 0.0:
    raise ValueError(f"train.person_loss_weight {person_weight}: expected a positive weight")
  graphdef = setup.graphdef
  if text_dropout > 0.0 and null_text is None:
    raise ValueError("train.text_dropout > 0 needs the empty prompt's states (null_text)")

  def loss_fn(lora, frozen, batch, key, latents):
    batch = dict(batch, video_latents=latents[0], ref_latents=latents[1])
    model = nnx.merge(graphdef, frozen, lora)
    t_key, noise_key, drop_key, pos_key = jax.random.split(key, 4)
    batch["text_embeds"] = drop_text(drop_key, batch["text_embeds"], null_text, text_dropout)
    x0 = batch["video_latents"]
    t = flow.sample_timesteps(t_key, x0.shape[0], shift)
    noise = jax.random.normal(noise_key, x0.shape, jnp.float32)
    positions = None
    if position_jitter > 0.0:
      positions = jittered_positions(pos_key, model, x0, position_jitter, jitter_temporal_range)
    return flow_loss(model, batch, t, noise, positions, person_weight=person_weight)

  def train_step(frozen, state, batch):
    with activation_sharding(mesh, rules):
      rng, key = jax.random.split(jax.random.wrap_key_data(state["rng"]))
      latents = (batch["video_latents"], batch["ref_latents"])
      loss, grads = jax.value_and_grad(loss_fn)(state["lora"], frozen, batch, key, latents)
      updates, opt = tx.update(grads, state["opt"], state["lora"])
      lora = optax.apply_updates(state["lora"], updates)
    grad_norm = optax.tree.norm(grads)
    metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state["step"]),
               "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm)}
    new_state = {"step": state["step"] + 1, "lora": lora, "opt": opt,
                 "rng": jax.random.key_data(rng)}
    return new_state, metrics

  return train_step


def batch_shardings(abstract_batch: dict, mesh, rules) -> dict:
  return {k: batch_sharding(mesh, rules, len(v.shape)) for k, v in abstract_batch.items()}


def jit_train_step(train_step: Callable, setup: Setup, abstract_batch: dict, mesh, rules):
  """jax.jit with explicit in/out shardings; the train state (argument 1) is donated."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  metric_sh = {k: replicated for k in ("loss", "grad_norm", "learning_rate", "finite")}
  return jax.jit(
      train_step,
      in_shardings=(setup.frozen_shardings, setup.train_shardings,
                    batch_shardings(abstract_batch, mesh, rules)),
      out_shardings=(setup.train_shardings, metric_sh),
      donate_argnums=(1,))


def make_eval_step(setup: Setup, eval_timesteps, seed: int, mesh, rules, abstract_batch) -> Callable:
  """eval(frozen, lora, batch, batch_index) -> (len(eval_timesteps),) losses at the fixed flow
  times (not shifted), with noise fixed by (seed, batch_index): comparable across evaluations."""
  graphdef = setup.graphdef
  times = tuple(float(t) for t in eval_timesteps)
  for t in times:
    if not 0.0 <= t <= 1.0:
      raise ValueError(f"train.eval_timesteps {times}: expected flow times in [0, 1]")

  def eval_step(frozen, lora, batch, batch_index):
    with activation_sharding(mesh, rules):
      model = nnx.merge(graphdef, frozen, lora)
      x0 = batch["video_latents"]
      key = jax.random.fold_in(jax.random.key(seed), batch_index)
      losses = []
      for i, t in enumerate(times):
        noise = jax.random.normal(jax.random.fold_in(key, i), x0.shape, jnp.float32)
        losses.append(flow_loss(model, batch, jnp.full((x0.shape[0],), t, jnp.float32), noise))
    return jnp.stack(losses)

  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.jit(eval_step, in_shardings=(setup.frozen_shardings, setup.train_shardings["lora"],
                                          batch_shardings(abstract_batch, mesh, rules), None),
                 out_shardings=replicated)
