"""Times our jitted Wan forward against diffusers' PyTorch forward: same device (CPU), same
config, same weights (converted), same inputs; runs alternate so load drift hits both equally.

    python benchmarks/bench_forward_vs_diffusers.py [--dim 512 --layers 8 --tokens 4096 --runs 5]

Prints one JSON line: both medians (seconds), their ratio (ours / diffusers), max relative error.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--dim", type=int, default=512)
  p.add_argument("--layers", type=int, default=8)
  p.add_argument("--ffn", type=int, default=2048)
  p.add_argument("--frames", type=int, default=4)
  p.add_argument("--tokens", type=int, default=4096)
  p.add_argument("--text-len", type=int, default=512)
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--threads", type=int, default=os.cpu_count())
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp
  import torch
  import wan_oracle
  from wildactor_jax import models
  from wildactor_jax.convert.__main__ import main as convert_main

  torch.set_num_threads(args.threads)
  side = int(round((args.tokens / args.frames) ** 0.5)) * 2  # latent side; patch 2x2
  tm = wan_oracle.make_wan(num_attention_heads=args.dim // 128, attention_head_dim=128,
                           ffn_dim=args.ffn, num_layers=args.layers, in_channels=16,
                           out_channels=16, text_dim=4096, freq_dim=256)
  with tempfile.TemporaryDirectory() as tmp:
    wan_oracle.save_diffusers(tm, os.path.join(tmp, "src"))
    assert convert_main(["--src", os.path.join(tmp, "src"), "--out", os.path.join(tmp, "c"),
                         "--dtype", "float32"]) == 0
    model = models.load_backbone(os.path.join(tmp, "c"))
  from flax import nnx
  fwd = nnx.jit(lambda m, x, t, c: m(x, t, c))
  rng = np.random.default_rng(0)
  x = rng.standard_normal((1, args.frames, side, side, 16), dtype=np.float32)
  ts = np.array([500.0], np.float32)
  text = rng.standard_normal((1, args.text_len, 4096), dtype=np.float32)
  jx, jt, jc = jnp.asarray(x), jnp.asarray(ts), jnp.asarray(text)
  t0 = time.perf_counter()
  ours = np.asarray(fwd(model, jx, jt, jc))
  compile_s = time.perf_counter() - t0
  ref = wan_oracle.torch_forward(tm, x, ts, text)  # warm-up for torch too
  ours_t, torch_t = [], []
  for _ in range(args.runs):
    t0 = time.perf_counter()
    fwd(model, jx, jt, jc).block_until_ready()
    ours_t.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    wan_oracle.torch_forward(tm, x, ts, text)
    torch_t.append(time.perf_counter() - t0)
  result = {
      "bench": "forward_vs_diffusers", "device": f"cpu ({platform.processor() or platform.machine()}"
      f", {os.cpu_count()} cores)", "dim": args.dim, "layers": args.layers, "ffn": args.ffn,
      "video_tokens": args.frames * (side // 2) ** 2, "text_len": args.text_len, "runs": args.runs,
      "ours_median_s": float(np.median(ours_t)), "diffusers_median_s": float(np.median(torch_t)),
      "ratio_ours_over_diffusers": float(np.median(ours_t) / np.median(torch_t)),
      "ours_compile_s": compile_s,
      "max_rel_err": float(np.linalg.norm(ours - ref) / np.linalg.norm(ref)),
      "jax": jax.__version__, "torch": torch.__version__, "torch_threads": args.threads,
  }
  print(json.dumps(result))


if __name__ == "__main__":
  main()
