"""Training the benchmark's readers on a corpus: the identity embedder and the prompt probes.

    python -m wildactor_jax.demo.readers --raw CORPUS --embedder embedder.npz --probes probes.npz

Both learn from every actor of CORPUS (real renders only): for the demo that is the pre-training
corpus, whose actors are not the demo's, so the held-out actors the benchmark scores are unseen by
its readers as by the generator. Prints one JSON line (steps, seconds, final losses).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from wildactor_jax.eval import embedder, probes, protocol, raw

EMBEDDER = dataclasses.replace(embedder.EmbedderConfig(), steps=2000)
PROBES = probes.ProbeConfig()


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m wildactor_jax.demo.readers",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--raw", required=True)
  p.add_argument("--embedder", help="output .npz of the identity embedder")
  p.add_argument("--probes", help="output .npz of the prompt probes")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--quick", action="store_true", help="a few steps (smoke test)")
  args = p.parse_args(argv)
  ds = raw.load(args.raw)
  out, losses = {}, {}
  jobs = (("embedder", args.embedder, EMBEDDER, protocol.fit_embedder, embedder.save),
          ("probes", args.probes, PROBES, protocol.fit_probes, probes.save))
  for name, path, cfg, fit, save in jobs:
    if not path:
      continue
    t0 = time.time()

    def log(i, loss, name=name):
      losses[name] = loss
      print(f"{name} step {i} loss {loss:.4f}", file=sys.stderr, flush=True)

    if args.quick:
      cfg = dataclasses.replace(cfg, steps=3)
    save(fit(ds, ds.actors, cfg, args.seed, log), path)
    out[name] = {"steps": cfg.steps, "seconds": round(time.time() - t0, 1),
                 "actors": len(ds.actors), "clips": len(ds.clips), "loss": losses.get(name)}
  print(json.dumps(out), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
