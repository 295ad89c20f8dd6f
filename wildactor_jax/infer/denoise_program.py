"""One denoising step of a config's sampler as a program to compile without weights: what
`launch/aot_compile.py --program generate` plans for a TPU slice (memory, roofline).

    program = denoise_program(config, mesh)
    compiled = program.step.lower(*program.args).compile()

The step is `inference.denoise_step` as `generate` runs it on config.data's clip: with guidance
(config.sample.cfg != 1) one pass of the [cond; uncond] batch of 2 with the references' K/V
cache doubled; without (a step-distilled student, cfg 1) one conditional pass of batch 1; the
solver's update included. The K/V cache is an input, as in generation (encoded once per clip,
outside the steps), laid out as the compiled `encode_references` lays it out on this mesh (that
program is compiled too, for its output shardings and memory). Every other input is replicated,
as `inference.placer` puts it. Nothing is allocated: the weights are the run set-up's abstract
state, laid out as `load_run` restores a run (frozen weights by config.mesh.rules, the trained
LoRA as its checkpoint is restored: float32, ZeRO-split where the rules would replicate it).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from wildactor_jax import flops as flops_lib, inference, sampling
from wildactor_jax.infer.settings import settings_from_config
from wildactor_jax.input import schema
from wildactor_jax.models.transformer import References
from wildactor_jax.train_lib import state as state_lib


class DenoiseProgram(NamedTuple):
  step: Any            # jitted (frozen, lora, state, row, text, cache, scale) -> state
  args: tuple          # their abstract values, with shardings
  encode: Any          # the compiled encode_references (with the CFG doubling when guided)
  settings: Any        # inference.GenerationSettings
  info: dict           # batch, tokens, forward passes per clip, analytic FLOPs of the step


def denoise_program(config, mesh) -> DenoiseProgram:
  if int(config.model.get("video_lora_rank", 0)) > 0:
    # A few-step student (a distilled run's config.json has this): its step LoRA is the trained
    # part, restored as load_run restores it; the identity LoRA is frozen with the backbone.
    config = ml_collections.ConfigDict(config.to_dict())
    config.train.trainable = "video_lora"
  rs = state_lib.setup_from_config(config, mesh, optimizer=False)
  cfg, setup = rs.model_cfg, rs.setup
  s = settings_from_config(config)
  t, h, w, c = schema.latent_grid(config)
  grid = (t, h // cfg.patch_size[1], w // cfg.patch_size[2])
  refs_count = int(config.data.num_faces) + int(config.data.num_bodies)
  text_len = schema.text_length(config)
  guided = inference.forward_passes(s) > s.steps
  batch = 2 if guided else 1
  replicated = NamedSharding(mesh, P())
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=replicated)
  frozen, lora = setup.abstract_frozen, setup.abstract_train["lora"]
  merged = lambda f, l: nnx.merge(setup.graphdef, f, l)

  def encode(f, l, refs):
    cache = merged(f, l).encode_references(refs, grid)
    return inference.double_batch(cache) if guided else cache

  refs = References(spec((1, refs_count, h, w, c), cfg.jnp_dtype),
                    spec((1, refs_count), jnp.int32), spec((1, refs_count), jnp.bool_))
  encoded = jax.jit(encode).lower(frozen, lora, refs).compile()
  cache = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                       jax.eval_shape(encode, frozen, lora, refs), encoded.output_shardings)

  table = sampling.coefficient_table(sampling.coefficients(s.solver, s.steps, s.shift))
  row = jax.tree.map(lambda a: spec(a.shape[1:], a.dtype), table)
  noise = spec((1, t, h, w, c), jnp.float32)
  state = jax.tree.map(lambda a: spec(a.shape, a.dtype),
                       jax.eval_shape(sampling.initial_state, noise))
  text = spec((batch, text_len, cfg.text_dim), cfg.jnp_dtype)
  scale = spec((), jnp.float32) if guided else None

  def step(f, l, state, row, text, cache, scale):
    return inference.denoise_step(merged(f, l), state, row, text, cache, scale)

  video, ref_tokens = math.prod(grid), refs_count * grid[1] * grid[2]
  info = {"cfg_batch": batch, "token_grid": grid, "references": refs_count, "video_tokens": video, "reference_tokens_cached": ref_tokens,
          "text_tokens": text_len, "steps_per_clip": s.steps, "cfg": s.cfg, "solver": s.solver,
          "forward_passes_per_clip": inference.forward_passes(s),
          "video_lora_rank": cfg.video_lora_rank,
          "model_flops_per_step": flops_lib.forward_flops(cfg, video, ref_tokens, text_len,
                                                          batch=batch, ref_cached=True).forward}
  return DenoiseProgram(jax.jit(step), (frozen, lora, state, row, text, cache, scale), encoded,
                        s, info)
