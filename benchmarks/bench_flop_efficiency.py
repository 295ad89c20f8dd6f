"""XLA's FLOP count of a compiled training pass against our analytic count (no wasted work).

Compiles forward + backward with LoRA gradients (remat off) for a mid-size WildActor config on
the CPU backend, reads `cost_analysis()["flops"]`, and divides by `flops.forward_flops(...).train`.
A ratio near 1 means AIPA's two dense attention calls spend no FLOPs on the masked
reference->video block; a joint masked attention over [video; refs] would add that block.

    python benchmarks/bench_flop_efficiency.py [--dim 512 --layers 4 --frames 8 --grid 8x8 --refs 6]
"""
from __future__ import annotations

import argparse
import dataclasses
import json


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--dim", type=int, default=512)
  # XLA's cost analysis counts a while-loop body once, whatever its trip count: we compile a
  # 2-layer scan (so the body is a generic layer with the full backward, not layer 0's pruned
  # one) and compare against the analytic count of one layer.
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--frames", type=int, default=8)
  p.add_argument("--grid", default="8x8")
  p.add_argument("--refs", type=int, default=6)
  p.add_argument("--text", type=int, default=128)
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp
  from flax import nnx

  from wildactor_jax import flops
  from wildactor_jax.models.config import ModelConfig
  from wildactor_jax.models.loading import abstract_model
  from wildactor_jax.models.transformer import References

  from wildactor_jax.models import attention
  # The query-chunked CPU attention is a loop too (counted once by XLA): use one dense call.
  attention.QUERY_CHUNK = 1 << 30
  rows, cols = (int(v) for v in args.grid.split("x"))
  results = []
  for aipa in (True, False):
    cfg = ModelConfig(dim=args.dim, ffn_dim=4 * args.dim, num_heads=args.dim // 128,
                      num_layers=args.layers, in_channels=48, out_channels=48, text_dim=1024,
                      lora_rank=128, aipa=aipa)
    model = abstract_model(cfg)
    s = lambda *shape, dt=jnp.float32: jax.ShapeDtypeStruct(shape, dt)
    x = s(1, args.frames, 2 * rows, 2 * cols, 48)
    refs = References(s(1, args.refs, 2 * rows, 2 * cols, 48), s(1, args.refs, dt=jnp.int32),
                      s(1, args.refs, dt=jnp.bool_))

    def loss(m, x, t, c, r):
      return jnp.mean(jnp.square(m(x, t, c, references=r) - x))

    graphdef, state = nnx.split(model)

    def step(state, x, t, c, r):
      m = nnx.merge(graphdef, state)
      return nnx.grad(loss, argnums=nnx.DiffState(0, nnx.LoRAParam))(m, x, t, c, r)

    compiled = jax.jit(step).lower(state, x, s(1), s(1, args.text, 1024), refs).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla = float(cost["flops"])
    lv, lr = args.frames * rows * cols, args.refs * rows * cols
    one_layer = dataclasses.replace(cfg, num_layers=1)
    analytic = flops.forward_flops(one_layer, lv, lr, args.text).train
    results.append({"bench": "flop_efficiency", "aipa": aipa, "xla_flops": xla,
                    "analytic_train_flops": analytic, "ratio": xla / analytic,
                    "target_max_ratio": 1.10, "video_tokens": lv, "reference_tokens": lr,
                    "dim": args.dim, "layers": args.layers, "jax": jax.__version__})
  for r in results:
    print(json.dumps(r))


if __name__ == "__main__":
  main()
