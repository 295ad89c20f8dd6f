"""References + prompt -> video: the generation pipeline on whatever devices the model is on.

    encode prompt and "" (UMT5)  ->  encode each reference image as one latent frame (VAE)
    -> reference K/V cache, once  ->  flow-ODE integration (Euler / UniPC) with classifier-free
    guidance as one batched cond/uncond pass per step  ->  VAE decode.

Both CFG branches see the references (guidance acts on the text); the references' K/V are
computed once for the sample and reused at every step.

Continuation (`context`): the last K latent frames of a previous segment lead the new window,
clean. The model sees them at timestep 0 (per-frame timesteps (B, T), the way training marks the
clean prefix of its i2v and continue examples); the solver denoises only the other frames, and
the context is re-imposed after every step, so it comes out bit-identical.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wildactor_jax import sampling
from wildactor_jax.models.irope import BODY, FACE
from wildactor_jax.models.transformer import References, WanTransformer
from wildactor_jax.train_lib import flow


class NonFiniteLatentsError(ValueError):
  """The sampler's output holds NaN or inf: decoding it would write a black (or garbage) video."""


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
  frames: int
  height: int
  width: int
  steps: int = 50
  cfg: float = 5.0
  shift: float = 5.0
  solver: str = "unipc"
  seed: int = 0
  # True: the unconditional branch drops the references as well as the prompt, so guidance
  # amplifies identity with the text (v = v(null, none) + cfg (v(prompt, refs) - v(null, none)));
  # False: both branches see the references and guidance acts on the prompt alone.
  guide_references: bool = False
  # Guidance only while the flow time sigma lies in [lo, hi]; the scale is 1 (the conditional
  # velocity alone) outside it. (0, 1), the default, guides every step as Wan and diffusers do.
  # Guidance at low noise amplifies the model's fine-scale errors into texture noise
  # (Kynkaenniemi et al., "Applying guidance in a limited interval improves sample and
  # distribution quality in diffusion models", NeurIPS 2024).
  cfg_interval: tuple[float, float] = (0.0, 1.0)


def check_geometry(s: GenerationSettings, vae, patch: tuple[int, int, int]) -> tuple[int, int, int]:
  """The latent grid (T', H', W') for the requested clip; one-line errors for bad sizes."""
  tf, sf = int(vae.temporal_factor), int(vae.spatial_factor)
  if s.frames < 1 or (s.frames - 1) % tf:
    raise ValueError(f"--frames {s.frames}: expected 1 + {tf}k (e.g. {1 + tf * 4}, {1 + tf * 8})")
  step = sf * patch[1]
  if s.height % step or s.width % step or s.height <= 0 or s.width <= 0:
    raise ValueError(f"--height/--width {s.height}x{s.width}: each must be a positive multiple of "
                     f"{step} (VAE factor {sf} x patch {patch[1]})")
  return 1 + (s.frames - 1) // tf, s.height // sf, s.width // sf


def check_window(s: GenerationSettings, vae, model_cfg, references: int) -> None:
  """Before any weights load: every position id of a window (its video tokens, and `references`
  references placed by I-RoPE) must index the model's RoPE table. The model checks the same
  when it is traced, but only after the checkpoint has been restored; a window too long for the
  table would otherwise also try to denoise 25000 latent frames at once. model_cfg: config.model
  or a ModelConfig."""
  from wildactor_jax.models import irope
  grid = check_geometry(s, vae, tuple(model_cfg.patch_size))
  tokens = tuple(g // p for g, p in zip(grid, model_cfg.patch_size))
  farthest = [tuple(g - 1 for g in tokens)]
  if references:
    farthest.append(irope.farthest_positions(
        tokens, tokens[1:], references, irope=bool(model_cfg.irope),
        face_offset=int(model_cfg.face_temporal_offset),
        body_offset=int(model_cfg.body_temporal_offset),
        stride=int(model_cfg.reference_frame_stride)))
  table = int(model_cfg.rope_max_seq_len)
  t_max, h_max, w_max = (max(f[i] for f in farthest) for i in range(3))
  with_refs = f" with {references} reference{'s' * (references != 1)}" if references else ""
  if t_max >= table:
    fit = tokens[0] - (t_max - table + 1)  # temporal positions grow one per latent token
    most = (f"at most {1 + int(vae.temporal_factor) * (fit * model_cfg.patch_size[0] - 1)} "
            "frames per window" if fit >= 1 else "fewer references")
    raise ValueError(f"--frames {s.frames}: a window of {grid[0]} latent frames{with_refs} "
                     f"reaches RoPE position {t_max}, beyond the model's table of {table} "
                     f"(model.rope_max_seq_len); expected {most} (a longer clip grows window by "
                     "window: --continue-from, or a story's shots)")
  if max(h_max, w_max) >= table:
    raise ValueError(f"--height/--width {s.height}x{s.width}: {tokens[1]}x{tokens[2]} tokens"
                     f"{with_refs} reach RoPE position {max(h_max, w_max)}, beyond the model's "
                     f"table of {table} (model.rope_max_seq_len)")


def encode_references(vae, images: Sequence[np.ndarray], types: Sequence[int]) -> References | None:
  """Images (H, W, 3) in [-1, 1], each encoded alone as one latent frame -> References (B=1)."""
  if not images:
    return None
  if any(t not in (FACE, BODY) for t in types):
    raise ValueError(f"reference types {list(types)}: expected {FACE} (face) or {BODY} (body)")
  video = jnp.asarray(np.stack(images)[:, None], jnp.float32)  # (R, 1, H, W, 3)
  latents = jnp.asarray(vae.encode(video))[:, 0]                # (R, h, w, z)
  r = latents.shape[0]
  return References(latents[None], jnp.asarray([list(types)], jnp.int32), jnp.ones((1, r), bool))


def placer(model: WanTransformer):
  """device_put onto the model's devices, replicated (inputs must live where the weights do)."""
  leaf = jax.tree.leaves(nnx.state(model))[0]
  sharding = getattr(leaf, "sharding", None)
  if not isinstance(sharding, jax.sharding.NamedSharding):
    return lambda tree: tree
  replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
  return lambda tree: jax.device_put(tree, replicated)


def double_batch(tree):
  """Duplicates a batch pytree for the [cond; uncond] CFG batch (axis 1 for per-layer K/V)."""
  return jax.tree.map(lambda a: jnp.concatenate([a, a], axis=1 if a.ndim == 5 else 0), tree)


def guidance_cache(cache, guide_references: bool):
  """The reference cache (or, for the symmetric ablation, the References) of a batch of n
  samples for the [cond (n rows); uncond (n rows)] batch. With guide_references the uncond rows
  have no valid reference (length 0 / mask off): with AIPA exactly the backbone; the symmetric
  model, as in its training on examples without references, still adapts the video tokens."""
  if isinstance(cache, References):
    n = cache.mask.shape[0]
    cache2 = jax.tree.map(lambda a: jnp.concatenate([a, a], axis=0), cache)
    return cache2._replace(mask=cache2.mask.at[n:].set(False)) if guide_references else cache2
  n = cache.lengths.shape[0]
  cache2 = double_batch(cache)
  if guide_references:
    cache2 = cache2._replace(lengths=cache2.lengths.at[n:].set(0))
  return cache2


def model_velocity(model: WanTransformer, x: jax.Array, timestep, text: jax.Array, cache,
                   clean_frames=0) -> jax.Array:
  """The model's velocity at x (B, T, H, W, C), float32: timestep a scalar or (B,) in 0..1000,
  text (B, S, D), cache the references' K/V for batch B (or References, or None); the first
  `clean_frames` latent frames (an int or (B,)) are clean context (timestep 0 there)."""
  b = x.shape[0]
  t = jnp.broadcast_to(jnp.asarray(timestep, jnp.float32), (b,))
  if not isinstance(clean_frames, int) or clean_frames:
    t = flow.frame_timesteps(t, x.shape[1], jnp.broadcast_to(clean_frames, (b,)))
  refs = {"references" if isinstance(cache, References) else "reference_cache": cache}
  return model(x.astype(model.cfg.jnp_dtype), t, text, **refs).astype(jnp.float32)


def guided_velocity(model: WanTransformer, x: jax.Array, timestep, text: jax.Array, cache2,
                    cfg_scale, clean_frames=0) -> jax.Array:
  """Classifier-free guided velocity at x (n, T, H, W, C): cond and uncond as one batch of 2n.
  text (2n, S, D) = [cond; uncond]; cache2 the reference K/V doubled for that batch (or None);
  cfg_scale a scalar or one per sample (n, 1, 1, 1, 1); clean_frames as in model_velocity."""
  cf = clean_frames if isinstance(clean_frames, int) else jnp.concatenate([clean_frames] * 2)
  t = timestep if jnp.ndim(timestep) == 0 else jnp.concatenate([timestep] * 2)
  velocity = lambda x2, _: model_velocity(model, x2, t, text, cache2, cf)
  return sampling.guided(velocity, cfg_scale)(x, timestep)


def predict_x0(model: WanTransformer, x: jax.Array, sigma: float, text: jax.Array, cache2=None,
               cfg_scale: float = 1.0) -> jax.Array:
  """The sampler's one-step clean-latent estimate at flow time sigma: the model sees the timestep
  the sampler gives it (floor(1000 sigma)) and m = x - sigma v, exactly as inside a solver step."""
  timestep = float(np.floor(sigma * sampling.TIMESTEP_SCALE))
  v = guided_velocity(model, x, timestep, text, cache2, cfg_scale)
  return sampling.data_prediction(x, sigma, v)


@nnx.jit
def denoise_step(model, state, row, text, cache2, cfg_scale, context=None):
  """One CFG pass (cond and uncond batched) and one solver update, jitted once per shape: the
  guidance scale is an argument, not a constant, so clips with any scale share the compile.
  cfg_scale None: no guidance, one conditional pass (text (1, S, D), the cache not doubled), as
  a step-distilled student samples. context (1 or n, K, H, W, C) or None: clean leading
  frames, re-imposed after the update."""
  k = 0 if context is None else context.shape[1]
  if cfg_scale is None:
    v = model_velocity(model, state[0], row.timestep, text, cache2, k)
  else:
    v = guided_velocity(model, state[0], row.timestep, text, cache2, cfg_scale, k)
  state = sampling.solver_step(state, row, v)
  return state if context is None else sampling.impose_prefix(state, context)


def guidance_scales(s: GenerationSettings, sigma: np.ndarray) -> np.ndarray:
  """(N,) float32 guidance scale of each step: s.cfg where the step's sigma lies in
  s.cfg_interval, else 1 (no guidance)."""
  lo, hi = s.cfg_interval
  if not 0.0 <= lo <= hi <= 1.0:
    raise ValueError(f"cfg_interval {s.cfg_interval}: expected 0 <= lo <= hi <= 1 (flow time)")
  sigma = np.asarray(sigma)
  return np.where((sigma >= lo) & (sigma <= hi), s.cfg, 1.0).astype(np.float32)


def forward_passes(s: GenerationSettings) -> int:
  """Model passes (batch rows) a window costs: one per step when no step is guided (every scale
  1, as a step-distilled student samples), else two (cond and uncond) per step. The references'
  K/V cache (one pass of the reference tokens alone, once per clip) is not counted."""
  scales = guidance_scales(s, sampling.coefficients(s.solver, s.steps, s.shift).sigma)
  return s.steps * (1 if np.all(scales == 1.0) else 2)


# The reference K/V cache, jitted once per token grid (a static argument).
encode_reference_cache = nnx.jit(lambda model, refs, tokens: model.encode_references(refs, tokens),
                                 static_argnums=2)


def denoise(model: WanTransformer, text: jax.Array, cache, noise: jax.Array,
            s: GenerationSettings, on_step: Callable[[int, float], None] | None = None,
            context: jax.Array | None = None):
  """Runs the sampler on noise (n, T, H, W, C); text (2n, S, D) = [cond (n rows); uncond (n
  rows)]. Returns clean latents (n, T, H, W, C). context (1 or n, K, H, W, C), K < T: clean
  leading frames kept as given (continuation; one per sample, or one for all)."""
  coeffs = sampling.coefficients(s.solver, s.steps, s.shift)
  table = sampling.coefficient_table(coeffs)
  scales = guidance_scales(s, coeffs.sigma)
  unguided = bool(np.all(scales == 1.0))  # cfg 1: one conditional forward per step, not two
  if unguided:
    text, cache2 = text[:noise.shape[0]], cache  # the conditional rows
  else:
    cache2 = None if cache is None else guidance_cache(cache, s.guide_references)
  state = sampling.initial_state(noise)
  if context is not None:
    if context.shape[0] not in (1, noise.shape[0]) or context.shape[2:] != noise.shape[2:] or \
        not 0 < context.shape[1] < noise.shape[1]:
      raise ValueError(f"context latents {tuple(context.shape)}: expected (1 or n, K, "
                       f"{', '.join(map(str, noise.shape[2:]))}) with 0 < K < {noise.shape[1]} "
                       "(the window's latent frames)")
    context = jnp.asarray(context, jnp.float32)
    state = sampling.impose_prefix(state, context)
  for i in range(s.steps):
    t0 = time.perf_counter()
    state = denoise_step(model, state, jax.tree.map(lambda a: a[i], table), text, cache2,
                         None if unguided else jnp.float32(scales[i]), context)
    jax.block_until_ready(state[0])
    if on_step is not None:
      on_step(i, time.perf_counter() - t0)
  return state[0]


def prompt_states(model: WanTransformer, text_encoder, prompt: str) -> jax.Array:
  """(2, S, D) [prompt; ""] states in the model's dtype, on the model's devices."""
  embeds, _ = text_encoder.encode([prompt, ""])
  return placer(model)(jnp.asarray(embeds, model.cfg.jnp_dtype))


def reference_cache(model: WanTransformer, vae, images: Sequence[np.ndarray], types: Sequence[int],
                    grid: tuple[int, int, int]):
  """The references' per-layer K/V for windows of latent grid (T', H', W'), or None without
  references. It depends on neither the prompt nor the window's content: one cache serves every
  step of every window of that grid (a whole story)."""
  refs = placer(model)(encode_references(vae, images, types))
  if refs is None:
    return None
  tokens = (grid[0], grid[1] // model.cfg.patch_size[1], grid[2] // model.cfg.patch_size[2])
  refs = refs._replace(latents=refs.latents.astype(model.cfg.jnp_dtype))
  if not model.cfg.aipa:
    # The symmetric ablation: references read the noisy video, so their K/V change every step;
    # the "cache" is the references themselves, run through the model at each step.
    return refs
  cache = encode_reference_cache(model, refs, tokens)
  jax.block_until_ready(cache)
  return cache


def sample_latents(model: WanTransformer, text: jax.Array, cache, s: GenerationSettings,
                   grid: tuple[int, int, int], noise: jax.Array | None = None,
                   context: jax.Array | None = None,
                   on_step: Callable[[int, float], None] | None = None) -> tuple[np.ndarray, list]:
  """One window of latents (1, T', H', W', C) float32 numpy, and the per-step seconds. noise:
  the initial latents, default drawn from `s.seed`; context: clean leading frames (see denoise)."""
  shape = (1,) + tuple(grid) + (model.cfg.in_channels,)
  if noise is None:
    noise = jax.random.normal(jax.random.key(s.seed), shape)
  elif tuple(noise.shape) != shape:
    raise ValueError(f"noise shape {tuple(noise.shape)}: expected {shape}")
  place = placer(model)
  noise = place(jnp.asarray(noise, jnp.float32))
  if context is not None:
    context = place(jnp.asarray(context, jnp.float32))
  step_times = []

  def record(i, dt):
    step_times.append(dt)
    if on_step is not None:
      on_step(i, dt)

  latents = np.asarray(denoise(model, text, cache, noise, s, record, context), np.float32)
  if not np.isfinite(latents).all():
    raise NonFiniteLatentsError(
        f"sampling produced {int(np.size(latents) - np.isfinite(latents).sum())} non-finite "
        f"latent values (NaN/inf) with cfg {s.cfg}, shift {s.shift}, {s.steps} {s.solver} steps; "
        "nothing was written (the checkpoint's trained weights may hold NaN or inf)")
  return latents, step_times


def generate_batch(model: WanTransformer, vae, text_encoder, prompts: Sequence[str],
                   images: Sequence[Sequence[np.ndarray]], types: Sequence[Sequence[int]],
                   s: GenerationSettings, seeds: Sequence[int],
                   context: np.ndarray | None = None) -> np.ndarray:
  """n independent clips in one batched sampler run (the benchmark's generation): sample i has
  its own prompt, references (any count, 0 included) and seed, and comes out as `generate` would
  make it alone up to float rounding (its noise is drawn from its own seed; padding references
  are masked out). context (n, K, H', W', C) or None: sample i continues from its own clean
  leading latent frames context[i] (see `denoise`; the video then includes them).
  -> videos (n, T, H, W, 3) float32 in [-1, 1]."""
  n = len(prompts)
  if not n == len(images) == len(types) == len(seeds):
    raise ValueError(f"{n} prompts, {len(images)} reference lists, {len(types)} type lists, "
                     f"{len(seeds)} seeds: expected one of each per clip")
  if context is not None and np.shape(context)[0] != n:
    raise ValueError(f"context latents {np.shape(context)}: expected one row per clip ({n})")
  has = [bool(i) for i in images]
  if not model.cfg.aipa and any(has) and not all(has):
    # The symmetric model adapts every video token once references are passed (even all masked
    # out), so clips without references run on their own, as they would alone.
    out = [None] * n
    for group in ([i for i in range(n) if has[i]], [i for i in range(n) if not has[i]]):
      pick = lambda seq: [seq[i] for i in group]
      part = None if context is None else np.asarray(context)[group]
      for i, video in zip(group, generate_batch(model, vae, text_encoder, pick(prompts),
                                                pick(images), pick(types), s, pick(seeds),
                                                part)):
        out[i] = video
    return np.stack(out)
  grid = check_geometry(s, vae, model.cfg.patch_size)
  embeds, _ = text_encoder.encode(list(prompts) + [""] * n)
  place = placer(model)
  text = place(jnp.asarray(embeds, model.cfg.jnp_dtype))
  r = max(len(i) for i in images)
  cache = None
  if r:
    h, w = s.height // vae.spatial_factor, s.width // vae.spatial_factor
    latents = np.zeros((n, r, h, w, model.cfg.in_channels), np.float32)
    kinds = np.zeros((n, r), np.int32)
    mask = np.zeros((n, r), bool)
    for i, (imgs, ts) in enumerate(zip(images, types)):
      if imgs:
        one = encode_references(vae, imgs, ts)
        latents[i, :len(imgs)] = np.asarray(one.latents[0])
        kinds[i, :len(imgs)], mask[i, :len(imgs)] = ts, True
    refs = place(References(jnp.asarray(latents, model.cfg.jnp_dtype), jnp.asarray(kinds),
                            jnp.asarray(mask)))
    tokens = (grid[0], grid[1] // model.cfg.patch_size[1], grid[2] // model.cfg.patch_size[2])
    cache = refs if not model.cfg.aipa else encode_reference_cache(model, refs, tokens)
  shape = (1,) + tuple(grid) + (model.cfg.in_channels,)
  noise = jnp.concatenate([jax.random.normal(jax.random.key(int(seed)), shape) for seed in seeds])
  latents = denoise(model, text, cache, place(noise), s,
                    context=None if context is None else place(jnp.asarray(context, jnp.float32)))
  return np.clip(np.asarray(vae.decode(latents), np.float32), -1.0, 1.0)


def steady_step_s(step_times: Sequence[float]) -> float:
  """The median step time without the first step (which includes compilation)."""
  return float(np.median(step_times[1:] if len(step_times) > 1 else step_times))


def generate(model: WanTransformer, vae, text_encoder, prompt: str, images: Sequence[np.ndarray],
             types: Sequence[int], s: GenerationSettings,
             on_step: Callable[[int, float], None] | None = None,
             noise: jax.Array | None = None, context: jax.Array | None = None,
             return_latents: bool = False):
  """-> (video (T, H, W, 3) float32 in [-1, 1], timings). Same seed, same output.

  noise: the initial latents (1, T', H', W', C); default drawn from `s.seed`.
  context: (1, K, H', W', C) clean latents that lead the window (continuation); the video is
  then the decoded window, context included. return_latents: also return the latents
  (1, T', H', W', C) as a third value.
  """
  grid = check_geometry(s, vae, model.cfg.patch_size)
  timings = {}
  t0 = time.perf_counter()
  text = prompt_states(model, text_encoder, prompt)
  cache = reference_cache(model, vae, images, types, grid)
  timings["encode_s"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  latents, step_times = sample_latents(model, text, cache, s, grid, noise, context, on_step)
  timings["denoise_s"] = time.perf_counter() - t0
  # The first step includes compilation; report the steady per-step time separately.
  timings["denoise_step_s"] = steady_step_s(step_times)
  t0 = time.perf_counter()
  video = np.asarray(vae.decode(latents), np.float32)[0]
  timings["decode_s"] = time.perf_counter() - t0
  video = np.clip(video, -1.0, 1.0)
  return (video, timings, latents) if return_latents else (video, timings)
