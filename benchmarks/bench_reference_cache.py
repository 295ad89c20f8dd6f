"""Inference cost of identity: one denoising step with 6 cached references vs none.

The reference K/V are computed once per sample (`encode_references`); each step then only
lengthens the video's key set by the reference tokens. Token ratio as in the paper's setting
(6 references x 390 tokens per 24 latent frames x 390 tokens = 0.25), scaled down spatially.

    python benchmarks/bench_reference_cache.py [--dim 512 --layers 4 --frames 24 --grid 6x8]
Prints one JSON line with both medians and their ratio (target: at most 1.30).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--dim", type=int, default=512)
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--frames", type=int, default=24)
  p.add_argument("--grid", default="6x8", help="tokens per latent frame, rows x cols")
  p.add_argument("--refs", type=int, default=6)
  p.add_argument("--runs", type=int, default=7)
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp
  from flax import nnx
  from wildactor_jax.models.config import ModelConfig
  from wildactor_jax.models.loading import create_model
  from wildactor_jax.models.transformer import References

  rows, cols = (int(v) for v in args.grid.split("x"))
  cfg = ModelConfig(dim=args.dim, ffn_dim=4 * args.dim, num_heads=args.dim // 128,
                    num_layers=args.layers, in_channels=48, out_channels=48, text_dim=4096,
                    lora_rank=128)
  model = create_model(cfg, seed=0)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((1, args.frames, 2 * rows, 2 * cols, 48), np.float32))
  text = jnp.asarray(rng.standard_normal((1, 512, 4096), np.float32))
  refs = References(jnp.asarray(rng.standard_normal((1, args.refs, 2 * rows, 2 * cols, 48),
                                                    np.float32)),
                    jnp.asarray([[0, 0, 0, 1, 1, 1][: args.refs]], jnp.int32),
                    jnp.ones((1, args.refs), bool))
  t = jnp.asarray([500.0])
  step_plain = nnx.jit(lambda m, x, t, c: m(x, t, c))
  step_cached = nnx.jit(lambda m, x, t, c, cache: m(x, t, c, reference_cache=cache))
  t0 = time.perf_counter()
  cache = nnx.jit(lambda m, r: m.encode_references(r, (args.frames, rows, cols)))(model, refs)
  jax.block_until_ready(cache)
  encode_s = time.perf_counter() - t0
  step_plain(model, x, t, text).block_until_ready()
  step_cached(model, x, t, text, cache).block_until_ready()
  plain, cached = [], []
  for _ in range(args.runs):  # alternate so machine load drift hits both alike
    t0 = time.perf_counter()
    step_plain(model, x, t, text).block_until_ready()
    plain.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    step_cached(model, x, t, text, cache).block_until_ready()
    cached.append(time.perf_counter() - t0)
  video_tokens = args.frames * rows * cols
  print(json.dumps({
      "bench": "reference_cache_step_ratio", "device": f"{jax.devices()[0].device_kind}",
      "cores": os.cpu_count(), "dim": args.dim, "layers": args.layers,
      "video_tokens": video_tokens, "reference_tokens": args.refs * rows * cols,
      "step_no_refs_median_s": float(np.median(plain)),
      "step_cached_refs_median_s": float(np.median(cached)),
      "ratio": float(np.median(cached) / np.median(plain)), "target_max_ratio": 1.30,
      "encode_references_s_incl_compile": encode_s, "runs": args.runs, "jax": jax.__version__}))


if __name__ == "__main__":
  main()
