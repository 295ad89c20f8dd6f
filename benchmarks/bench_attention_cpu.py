"""The "xla" attention backend on CPU: one dense call against query chunks, forward + backward.

For each query length (keys = queries + 256 reference tokens, 2 heads of 64, as the demo's toy
model; batch shrinking as length grows) prints one JSON line with milliseconds per
gradient call of: one dense `jax.nn.dot_product_attention`, fixed 256-query chunks (the tail
padded), and `balanced_chunk` sizes; then which one `attention()` picks. This is what set
`DENSE_QUERIES` in wildactor_jax/models/attention.py.

    python benchmarks/bench_attention_cpu.py [--lengths 320,640,1280,2560,5120] [--seconds 3]
"""
from __future__ import annotations

import argparse
import json
import time


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--lengths", default="320,640,1280,2560,5120")
  p.add_argument("--seconds", type=float, default=3.0, help="timing window per variant")
  args = p.parse_args(argv)

  import jax
  from wildactor_jax.models import attention

  def ms_per_call(fn, q, k, v) -> float:
    grad = jax.jit(jax.grad(lambda q, k, v: fn(q, k, v).sum(), argnums=(0, 1, 2)))
    jax.block_until_ready(grad(q, k, v))  # compile
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
      jax.block_until_ready(grad(q, k, v))
      calls += 1
    return round((time.perf_counter() - start) / calls * 1e3, 1)

  for lq in (int(x) for x in args.lengths.split(",")):
    batch = max(1, 2560 // lq)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    q = jax.random.normal(keys[0], (batch, lq, 2, 64))
    k, v = (jax.random.normal(keys[i], (batch, lq + 256, 2, 64)) for i in (1, 2))
    chunk = attention.balanced_chunk(lq)
    row = {"queries": lq, "keys": lq + 256, "batch": batch, "heads": 2, "head_dim": 64,
           "dense_ms": ms_per_call(
               lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla"),
               q, k, v),
           "chunks_256_ms": ms_per_call(
               lambda q, k, v: attention.chunked_attention(q, k, v, None, 256), q, k, v),
           "balanced_chunk": chunk,
           "balanced_ms": ms_per_call(
               lambda q, k, v: attention.chunked_attention(q, k, v, None, chunk), q, k, v),
           "attention_uses": "chunks" if attention.runs_in_chunks(lq) else "dense",
           "device": jax.devices()[0].device_kind, "jax": jax.__version__}
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()
