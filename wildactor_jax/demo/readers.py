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
  args = p.parse_args(argv)
  ds = raw.load(args.raw)
  out, losses = {}, {}
  log = lambda name: lambda i, loss: (losses.__setitem__(name, loss),
                                      print(f"{name} step {i} loss {loss:.4f}", file=sys.stderr,
                                            flush=True))
  if args.embedder:
    t0 = time.time()
    net = protocol.fit_embedder(ds, ds.actors, EMBEDDER, args.seed, log("embedder"))
    embedder.save(net, args.embedder)
    out["embedder"] = {"steps": EMBEDDER.steps, "seconds": round(time.time() - t0, 1),
                       "actors": len(ds.actors), "loss": losses.get("embedder")}
  if args.probes:
    t0 = time.time()
    probe = protocol.fit_probes(ds, ds.actors, PROBES, args.seed, log("probes"))
    probes.save(probe, args.probes)
    out["probes"] = {"steps": PROBES.steps, "seconds": round(time.time() - t0, 1),
                     "clips": len(ds.clips), "loss": losses.get("probes")}
  print(json.dumps(out), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
