"""DiT throughput on one accelerator: a denoising step (CFG batch of 2, references cached) and a
LoRA forward+backward (gradients of the reference LoRA only; no optimiser update), random weights.

    python benchmarks/bench_dit_device.py --backbone wan22_ti2v_5b --height 480 --width 832 \
        --frames 93 --refs 6 --attention cudnn --dtype bfloat16
Prints one JSON line per measurement with step time, tokens/s, model TFLOP/s and MFU
(analytic FLOPs from wildactor_jax.flops).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def timed(fn, *args, runs):
  out = fn(*args)
  import jax
  jax.block_until_ready(out)
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), float(np.std(times))


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--backbone", default="wan22_ti2v_5b")
  p.add_argument("--height", type=int, default=480)
  p.add_argument("--width", type=int, default=832)
  p.add_argument("--frames", type=int, default=93)
  p.add_argument("--refs", type=int, default=6)
  p.add_argument("--attention", default="cudnn")
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--remat", default="full")
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--modes", default="generate,train")
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp
  from flax import nnx

  from wildactor_jax import config_lib, flops
  from wildactor_jax.models.config import ModelConfig
  from wildactor_jax.models.loading import create_model
  from wildactor_jax.models.transformer import References

  tf, sf, z = config_lib.VAE_GEOMETRY[args.backbone]
  mc = dict(config_lib.model_config(args.backbone))
  mc.pop("name")
  mc.update(dtype=args.dtype, param_dtype=args.dtype, attention=args.attention, remat=args.remat,
            lora_rank=128)
  cfg = ModelConfig.from_mapping(mc)
  t_lat, h_lat, w_lat = 1 + (args.frames - 1) // tf, args.height // sf, args.width // sf
  grid = (t_lat, h_lat // 2, w_lat // 2)
  lv, per_ref = grid[0] * grid[1] * grid[2], grid[1] * grid[2]
  lr = args.refs * per_ref
  t0 = time.perf_counter()
  model = create_model(cfg, seed=0)
  init_s = time.perf_counter() - t0
  dt = jnp.dtype(args.dtype)
  key = jax.random.key(0)
  x = jax.random.normal(key, (1, t_lat, h_lat, w_lat, z), dt)
  text = jax.random.normal(key, (1, 512, cfg.text_dim), dt)
  types = jnp.asarray([[i % 2 for i in range(args.refs)]], jnp.int32)
  refs = References(jax.random.normal(key, (1, args.refs, h_lat, w_lat, z), dt), types,
                    jnp.ones((1, args.refs), bool))
  dev = jax.devices()[0]
  common = dict(backbone=args.backbone, device=dev.device_kind, backend=jax.default_backend(),
                jax=jax.__version__, dtype=args.dtype, attention=args.attention,
                resolution=f"{args.height}x{args.width}", frames=args.frames,
                latent_grid=list(grid), video_tokens=lv, reference_tokens=lr, refs=args.refs,
                init_s=init_s)

  def report(mode, seconds, spread, fl, tokens, extra=None):
    stats = dev.memory_stats() or {}
    line = dict(common, mode=mode, step_s=seconds, step_s_std=spread,
                tokens_per_s=tokens / seconds, model_flops=fl,
                **flops.mfu(fl, seconds, 1, dev.device_kind),
                peak_bytes_in_use=stats.get("peak_bytes_in_use"), **(extra or {}))
    print(json.dumps(line), flush=True)

  modes = args.modes.split(",")
  if "generate" in modes:
    encode = nnx.jit(lambda m, r: m.encode_references(r, grid))
    cache = encode(model, refs)
    cache2 = jax.tree.map(lambda a: jnp.concatenate([a, a], axis=1 if a.ndim == 5 else 0), cache)
    x2, text2 = jnp.concatenate([x, x]), jnp.concatenate([text, text])
    ts = jnp.asarray([500.0, 500.0])
    step = nnx.jit(lambda m, x, t, c, k: m(x, t, c, reference_cache=k))
    plain = nnx.jit(lambda m, x, t, c: m(x, t, c))
    s_ref, sd_ref = timed(step, model, x2, ts, text2, cache2, runs=args.runs)
    s_plain, sd_plain = timed(plain, model, x2, ts, text2, runs=args.runs)
    f_ref = flops.forward_flops(cfg, lv, lr, 512, batch=2, ref_cached=True).forward
    f_plain = flops.forward_flops(cfg, lv, 0, 512, batch=2).forward
    report("generate_step_cfg_cached_refs", s_ref, sd_ref, f_ref, 2 * lv,
           {"per_50_steps_s": 50 * s_ref, "ratio_vs_no_refs": s_ref / s_plain})
    report("generate_step_cfg_no_refs", s_plain, sd_plain, f_plain, 2 * lv,
           {"per_50_steps_s": 50 * s_plain})
  if "train" in modes:
    def loss_fn(m, x, t, c, r):
      v = m(x, t, c, references=r)
      return jnp.mean(jnp.square(v.astype(jnp.float32) - x.astype(jnp.float32)))

    grad = nnx.jit(lambda m, x, t, c, r: nnx.value_and_grad(
        loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(m, x, t, c, r))
    s, sd = timed(grad, model, x, jnp.asarray([500.0]), text, refs, runs=args.runs)
    fl = flops.forward_flops(cfg, lv, lr, 512, batch=1).train
    report("train_fwd_bwd_lora_grads", s, sd, fl, lv + lr, {"remat": args.remat})


if __name__ == "__main__":
  main()
