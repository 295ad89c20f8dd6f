"""Wan VAE encode/decode speed and memory on one device; prints ONE JSON line.

    JAX_PLATFORMS=cpu python benchmarks/bench_vae.py --frames 17 --size 64 \
        --append benchmarks/results/vae_cpu.jsonl

The model is a random Wan2.2-style VAE (patchify 2, residual stages, z48, dim_mult 1-2-4-4, two
res blocks per stage: the real architecture) at reduced width (`--base-dim`, default 32 and
decoder 48, vs 160/256 released), built without torch. Times are the median and the minimum of
`--repeats` calls after one warm-up call (whose time, mostly compilation, is reported
separately); with `--diffusers` our calls and PyTorch's alternate, and the ratios use the
minima, the steadier figure on a shared machine. Memory: the
process's peak RSS, and XLA's compiled temp-buffer size for the whole streamed clip, which stays
at one chunk's activations (the causal cache streams over time).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wildactor_jax.models import vae as vae_lib


def timed(fns: dict, repeats: int) -> dict:
  """name -> (first-call s, median s, min s). The functions' calls are interleaved, so load from
  other processes on a shared machine hits every contender alike."""
  out = {}
  for name, fn in fns.items():
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    out[name] = [time.perf_counter() - t0, []]
  for _ in range(repeats):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      out[name][1].append(time.perf_counter() - t0)
  return {k: (first, statistics.median(ts), min(ts)) for k, (first, ts) in out.items()}


def torch_fns(config, video, latents) -> tuple[dict, dict]:
  """diffusers' AutoencoderKLWan on the same config and clip (random weights; float32)."""
  import diffusers
  import torch
  tm = diffusers.AutoencoderKLWan(**config, scale_factor_spatial=16).eval()
  x = torch.from_numpy(np.asarray(video).transpose(0, 4, 1, 2, 3).copy())
  z = torch.from_numpy(np.asarray(latents, np.float32).transpose(0, 4, 1, 2, 3).copy())

  def no_grad(f):
    def g():
      with torch.no_grad():
        return f().numpy()
    return g

  fns = {"diffusers_encode": no_grad(lambda: tm.encode(x).latent_dist.mode()),
         "diffusers_decode": no_grad(lambda: tm.decode(z).sample)}
  return fns, {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def temp_bytes(jitted, *args):
  try:
    return int(jitted.lower(*args).compile().memory_analysis().temp_size_in_bytes)
  except Exception:  # memory_analysis is best-effort on some backends
    return None


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--frames", type=int, default=17)
  p.add_argument("--size", type=int, default=64, help="square frame size in pixels")
  p.add_argument("--base-dim", type=int, default=32)
  p.add_argument("--decoder-base-dim", type=int, default=48)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--diffusers", action="store_true",
                 help="also time diffusers' AutoencoderKLWan (PyTorch) on the same config")
  p.add_argument("--append", default=None, help="also append the JSON line to this file")
  args = p.parse_args(argv)

  dtype = jnp.dtype(args.dtype)
  config = dict(vae_lib.WAN22_VAE, base_dim=args.base_dim, decoder_base_dim=args.decoder_base_dim)
  model = vae_lib.init_vae(config, seed=0, dtype=dtype, param_dtype=dtype)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.uniform(-1, 1, (1, args.frames, args.size, args.size, 3)), jnp.float32)

  t0 = time.perf_counter()  # first calls: mostly compilation
  latents = jax.block_until_ready(model.encode(video))
  enc_first = time.perf_counter() - t0
  t0 = time.perf_counter()
  jax.block_until_ready(model.decode(latents))
  dec_first = time.perf_counter() - t0
  peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before any PyTorch
  fns = {"encode": lambda: model.encode(video), "decode": lambda: model.decode(latents)}
  extra = {}
  if args.diffusers:
    more, extra = torch_fns(config, video, latents)
    fns.update(more)
  t = timed(fns, args.repeats)
  (_, enc, enc_min), (_, dec, dec_min) = t["encode"], t["decode"]

  graphdef, state = nnx.split(model)
  x_dev = jax.device_put(video)
  result = {
      "bench": "vae",
      "command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
      "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
      "n_devices_used": 1,
      "cpu_count": __import__("os").cpu_count(),
      "jax": jax.__version__,
      "flax": __import__("flax").__version__,
      "python": platform.python_version(),
      "model": dict(variant="wan2.2-style", base_dim=args.base_dim,
                    decoder_base_dim=args.decoder_base_dim, z_dim=48, dim_mult=[1, 2, 4, 4],
                    num_res_blocks=2, params_m=round(n_params / 1e6, 2), dtype=args.dtype),
      "input": dict(frames=args.frames, height=args.size, width=args.size,
                    latent_shape=list(latents.shape)),
      "encode_s_per_frame": round(enc / args.frames, 5),
      "decode_s_per_frame": round(dec / args.frames, 5),
      "encode_s_total": round(enc, 4),
      "decode_s_total": round(dec, 4),
      "encode_s_total_min": round(enc_min, 4),
      "decode_s_total_min": round(dec_min, 4),
      "encode_first_call_s": round(enc_first, 2),
      "decode_first_call_s": round(dec_first, 2),
      "encode_xla_temp_mib": None,
      "decode_xla_temp_mib": None,
      "date": time.strftime("%Y-%m-%d"),
      "peak_rss_mib": round(peak_rss, 1),
      "repeats": args.repeats,
  }
  if args.diffusers:
    result.update(extra)
    for op in ("encode", "decode"):
      _, med, low = t[f"diffusers_{op}"]
      result[f"diffusers_{op}_s_total"] = round(med, 4)
      result[f"diffusers_{op}_s_total_min"] = round(low, 4)
      # min over interleaved repeats: the least-contended estimate on a shared machine
      result[f"{op}_ratio_ours_over_diffusers"] = round(t[op][2] / low, 3)
  for key, fn, arg in (("encode_xla_temp_mib", vae_lib._encode, x_dev),
                       ("decode_xla_temp_mib", vae_lib._decode, latents)):
    b = temp_bytes(fn, graphdef, state, arg)
    result[key] = None if b is None else round(b / 2**20, 2)
  line = json.dumps(result)
  print(line)
  if args.append:
    with open(args.append, "a") as fh:
      fh.write(line + "\n")
  return result


if __name__ == "__main__":
  main()
