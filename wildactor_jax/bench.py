"""python -m wildactor_jax.bench --config configs/X.py[:arg] --mode train|generate
    [--steps 10 --warmup 2 --mesh 1,-1,1,1 --vs diffusers] [--config.a.b=v ...]

Throughput you can compare across CPU, GPU and TPU, one JSON line per run:
- train: the real jitted train step (rectified flow, LoRA-only AdamW, shardings, donation) on
  random batches with the data pipeline's shapes;
- generate: one denoising step of the config's sampler (config.sample: a CFG pass of batch 2
  with the references' K/V cached plus the solver update, as `generate` runs it; with
  sample.cfg = 1 one conditional pass of batch 1, as a step-distilled student samples), and
  the clip's cost from it: steps, forward passes and seconds per clip;
- --vs diffusers: also our backbone forward and diffusers' PyTorch `WanTransformer3DModel`
  forward on the same device, same config, same (converted) weights and inputs, alternating, and
  their ratio (needs the test extra: torch, diffusers).
Warm-up steps (compilation) are excluded; the median and spread of the timed steps are reported
with model FLOPs from `wildactor_jax.flops` (analytic, documented there) and MFU against the
peak table.
"""
from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from wildactor_jax import cli, flops

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config", lock_config=False)
_MODE = flags.DEFINE_enum("mode", "train", ["train", "generate"], "what to time")
_STEPS = flags.DEFINE_integer("steps", 10, "timed steps")
_WARMUP = flags.DEFINE_integer("warmup", 2, "untimed steps first (the first compiles)")
_MESH = flags.DEFINE_string("mesh", None, "data,fsdp,context,tensor (default: config.mesh.shape)")
_VS = flags.DEFINE_enum("vs", None, ["diffusers"], "also time diffusers' forward, alternating")


def _timed(fn, steps: int, warmup: int) -> tuple[list[float], float]:
  t0 = time.perf_counter()
  for _ in range(warmup):
    jax.block_until_ready(fn())
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return times, compile_s


def _environment(config, mesh) -> dict:
  dev = jax.devices()[0]
  stats = {}
  try:
    stats = dev.memory_stats() or {}
  except Exception:  # some backends do not implement it
    pass
  import flax
  return {"backend": jax.default_backend(), "device_kind": dev.device_kind,
          "num_devices": mesh.size, "processes": jax.process_count(), "jax": jax.__version__,
          "flax": flax.__version__, "host": platform.machine(),
          "dtype": config.model.dtype, "param_dtype": config.model.param_dtype,
          "attention": config.model.attention, "remat": config.model.remat,
          "mesh": dict(zip(mesh.axis_names, (int(v) for v in mesh.devices.shape))),
          "peak_bytes_in_use": stats.get("peak_bytes_in_use")}


def _summary(times, compile_s, model_flops, tokens, mesh, env) -> dict:
  median = float(np.median(times))
  return dict(env, step_s=median, step_s_min=float(np.min(times)), step_s_max=float(np.max(times)),
              step_s_std=float(np.std(times)), timed_steps=len(times), compile_s=compile_s,
              tokens_per_s_per_device=tokens / median / mesh.size, model_flops=model_flops,
              **flops.mfu(model_flops, median, mesh.size, env["device_kind"]))


def bench_train(config, mesh, rules) -> dict:
  from wildactor_jax.input import batches, random_source, schema
  from wildactor_jax.train_lib import state as state_lib, step as step_lib
  rs = state_lib.setup_from_config(config, mesh)
  cfg = rs.model_cfg
  _, frozen, lora = state_lib.split_model(rs.create_model(), rs.trainable)
  state = [state_lib.init_train_state(lora, rs.tx, rs.setup, 0)]
  abstract = batches.abstract_batch(config, mesh, rules)
  step = step_lib.jit_train_step(step_lib.make_train_step(rs.setup, rs.tx, rs.schedule,
                                                          float(config.flow.shift), mesh, rules),
                                 rs.setup, abstract, mesh, rules)
  source = random_source.create_dataset(config, "train", jax.process_index(),
                                        jax.process_count())
  batch = batches.to_global(next(source), mesh, rules)  # one batch: time the step, not I/O

  def run():
    state[0], metrics = step(frozen, state[0], batch)
    return metrics["loss"]

  times, compile_s = _timed(run, _STEPS.value, _WARMUP.value)
  t, h, w, _ = schema.latent_grid(config)
  per_frame = (h // cfg.patch_size[1]) * (w // cfg.patch_size[2])
  video, refs = t * per_frame, int(config.data.r_max) * per_frame
  b = int(config.data.global_batch_size)
  text = schema.example_shapes(config)["text_embeds"][0]
  fl = b * flops.forward_flops(cfg, video, refs, text).train
  out = _summary(times, compile_s, fl, b * (video + refs), mesh, _environment(config, mesh))
  return dict(out, mode="train", batch=b, video_tokens_per_step=b * video,
              reference_tokens_per_step=b * refs, note="reference slots counted at r_max")


def bench_generate(config, mesh, rules) -> dict:
  from wildactor_jax import inference, sampling
  from wildactor_jax.infer.settings import settings_from_config
  from wildactor_jax.models.transformer import References
  from wildactor_jax.input import schema
  from wildactor_jax.train_lib import state as state_lib
  rs = state_lib.setup_from_config(config, mesh, optimizer=False)
  cfg = rs.model_cfg
  model = rs.create_model()
  t, h, w, c = schema.latent_grid(config)
  grid = (t, h // cfg.patch_size[1], w // cfg.patch_size[2])
  r = int(config.data.num_faces) + int(config.data.num_bodies)
  place = inference.placer(model)
  key = jax.random.key(0)
  dt = cfg.jnp_dtype
  refs = place(References(jax.random.normal(key, (1, r, h, w, c), dt),
                          jnp.asarray([[i % 2 for i in range(r)]], jnp.int32), jnp.ones((1, r), bool)))
  s_len = int(config.text_encoder.get("max_length", 512))
  from flax import nnx
  cache = nnx.jit(lambda m, x: m.encode_references(x, grid))(model, refs)
  s = settings_from_config(config)
  coeffs = sampling.coefficients(s.solver, s.steps, s.shift)
  row = jax.tree.map(lambda a: a[s.steps // 2], sampling.coefficient_table(coeffs))
  guided = inference.forward_passes(s) > s.steps
  batch = 2 if guided else 1  # cfg 1: one conditional pass, the cache not doubled
  text = place(jax.random.normal(key, (batch, s_len, cfg.text_dim), dt))
  cache = inference.double_batch(cache) if guided else cache
  scale = jnp.float32(s.cfg) if guided else None
  state = [sampling.initial_state(place(jax.random.normal(key, (1, t, h, w, c))))]

  def run():
    state[0] = inference.denoise_step(model, state[0], row, text, cache, scale)
    return state[0][0]

  times, compile_s = _timed(run, _STEPS.value, _WARMUP.value)
  video, ref_tokens = math.prod(grid), r * grid[1] * grid[2]
  fl = flops.forward_flops(cfg, video, ref_tokens, s_len, batch=batch, ref_cached=True).forward
  out = _summary(times, compile_s, fl, batch * video, mesh, _environment(config, mesh))
  out = dict(out, mode="generate", cfg_batch=batch, video_tokens_per_step=batch * video,
             reference_tokens_cached=ref_tokens, solver=s.solver, steps_per_clip=s.steps,
             cfg=s.cfg, forward_passes_per_clip=inference.forward_passes(s),
             video_lora_rank=cfg.video_lora_rank, per_clip_s=s.steps * out["step_s"])
  return dict(out, per_50_steps_s=50 * out["step_s"]) if guided else out


def vs_diffusers(config, steps: int) -> dict:
  """Our backbone forward vs diffusers' on this device: same config, weights, inputs."""
  import torch
  from wildactor_jax import models
  from wildactor_jax.convert import transformer as convert_transformer
  from wildactor_jax.testing import wan_oracle
  from wildactor_jax.input import schema
  m = config.model
  tm = wan_oracle.make_wan(num_attention_heads=m.num_heads, attention_head_dim=m.dim // m.num_heads,
                           ffn_dim=m.ffn_dim, num_layers=m.num_layers, in_channels=m.in_channels,
                           out_channels=m.out_channels, text_dim=m.text_dim, freq_dim=m.freq_dim)
  device = "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"
  with tempfile.TemporaryDirectory() as tmp:
    wan_oracle.save_diffusers(tm, os.path.join(tmp, "src"))
    convert_transformer.convert(os.path.join(tmp, "src"), os.path.join(tmp, "c"), "float32")
    ours = models.load_backbone(os.path.join(tmp, "c"), attention=m.attention)
  tm = tm.to(device)
  t, h, w, c = schema.latent_grid(config)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((1, t, h, w, c), dtype=np.float32)
  ts = np.array([500.0], np.float32)
  s_len = int(config.text_encoder.get("max_length", 512))
  text = rng.standard_normal((1, s_len, m.text_dim), dtype=np.float32)
  from flax import nnx
  fwd = nnx.jit(lambda mod, a, b, c: mod(a, b, c))
  args = (jnp.asarray(x), jnp.asarray(ts), jnp.asarray(text))
  tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3))).to(device)
  tt, tc = torch.from_numpy(ts).to(device), torch.from_numpy(text).to(device)

  def torch_fwd():
    with torch.no_grad():
      out = tm(tx, tt, tc, return_dict=False)[0]
    if device == "cuda":
      torch.cuda.synchronize()
    return out

  ref = torch_fwd().cpu().numpy().transpose(0, 2, 3, 4, 1)
  got = np.asarray(fwd(ours, *args))
  ours_t, torch_t = [], []
  for _ in range(steps):  # alternate, so load drift hits both alike
    t0 = time.perf_counter()
    jax.block_until_ready(fwd(ours, *args))
    ours_t.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    torch_fwd()
    torch_t.append(time.perf_counter() - t0)
  return {"vs": "diffusers", "torch": torch.__version__, "torch_device": device,
          "torch_threads": torch.get_num_threads(),
          "ours_forward_median_s": float(np.median(ours_t)),
          "diffusers_forward_median_s": float(np.median(torch_t)),
          "ratio_ours_over_diffusers": float(np.median(ours_t) / np.median(torch_t)),
          "max_rel_err": float(np.linalg.norm(got - ref) / np.linalg.norm(ref))}


def main(argv):
  del argv
  from wildactor_jax.sharding import activation_sharding, create_mesh
  config = _CONFIG.value
  shape = [int(v) for v in _MESH.value.split(",")] if _MESH.value else list(config.mesh.shape)
  mesh = create_mesh(shape, config.mesh.axes)
  rules = tuple((name, axes) for name, axes in config.mesh.rules)
  with activation_sharding(mesh, rules):
    result = (bench_train if _MODE.value == "train" else bench_generate)(config, mesh, rules)
  result["model"] = config.model.get("name", "?")
  if _VS.value == "diffusers":
    result.update(vs_diffusers(config, _STEPS.value))
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  cli.run_absl(main)
