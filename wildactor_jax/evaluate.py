"""python -m wildactor_jax.evaluate --workdir W --records R --split test --out eval.json
    [--raw RAW] [--generated DIR] [--seeds 0,1] [--embedder E.npz] [--probes P.npz]
    [--test-fraction 0.2] [--steps N] [--batches 8] [--autoencoder run|none|AE.npz]
    [--first-frame] [--overwrite]

Actor-Bench at our scale (wildactor_jax/eval/), following the WildActor paper's protocol:
- with --workdir and --records: sampling-free diagnostics on the split's encoded records (flow
  loss with true / shuffled / no references; reference attention mass per layer);
- with --raw (the raw synthetic dataset folder): the identity embedder and the prompt probes are
  trained on the training actors (or read from --embedder / --probes when those files exist; else
  saved there), then ground-truth and generated clips of the held-out actors are scored on both
  axes (wildactor_jax/eval/protocol.py): identity (view-aware similarity per view bin at the yaw
  read from each frame, retrieval top-1 with, without and with swapped references against a
  gallery that holds no reference image, attribute accuracy, temporal consistency) and prompt and
  motion (prompt adherence, copy-paste, yaw error and distance to the references' views, dynamic
  degree), each with a bootstrap 95% interval over identities, and the Fréchet distance of
  generated vs real frames next to that of two real splits.
  Generated clips come from --generated DIR when DIR/generated.jsonl exists; otherwise the
  workdir's newest checkpoint generates them into DIR (default: OUT's stem + "_clips") for
  every held-out actor, condition and seed. The real clips encoded and decoded by the run's
  autoencoder (--autoencoder, default the workdir's config.vae) are scored too, as the
  "autoencoded" condition: the most a generator in that latent space can reach. --first-frame
  adds the "first_frame" condition: the with-references clips continued from their source clip's
  own first frame (the frozen backbone's bound on identity it is handed in place).
Bad input: a one-line error, exit status 2, nothing written. An existing --out report is kept
unless --overwrite asks to replace it (then replaced by rename once the new one is complete).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from wildactor_jax import cli


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m wildactor_jax.evaluate", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", help="training workdir (its newest checkpoint)")
  p.add_argument("--records", help="encoded records folder (for the diagnostics)")
  p.add_argument("--split", default="test")
  p.add_argument("--out", required=True, help="output .json")
  p.add_argument("--raw", help="raw synthetic dataset folder (manifest.jsonl, clips/, refs/)")
  p.add_argument("--generated", help="folder of generated clips (generated.jsonl)")
  p.add_argument("--seeds", default="0,1", help="sampling seeds when generating (>= 2)")
  p.add_argument("--embedder", help="embedder .npz: read if it exists, else trained and saved")
  p.add_argument("--test-fraction", type=float, default=0.2,
                 help="held-out fraction of the dataset build (its actor_hash rule)")
  p.add_argument("--probes", help="prompt probes .npz: read if it exists, else trained and saved")
  p.add_argument("--steps", type=int, help="sampling steps when generating (default: config)")
  p.add_argument("--batches", type=int, default=8, help="diagnostic batches")
  p.add_argument("--batch", type=int, default=4,
                 help="clips sampled together when generating (each as it would come out alone)")
  p.add_argument("--seed", type=int, default=0, help="embedder, bootstrap and noise seed")
  p.add_argument("--autoencoder", default="run",
                 help="'run' (the workdir's config.vae; none without --workdir), 'none', or a "
                      "learned autoencoder .npz: real clips through it are the 'autoencoded' "
                      "condition")
  p.add_argument("--first-frame", action="store_true",
                 help="when generating, also the 'first_frame' diagnostic: each with-references "
                      "clip again, continued from its source clip's own first frame (what the "
                      "frozen backbone keeps of an identity handed to it in place)")
  cli.add_overwrite_argument(p)
  return p.parse_args(argv)


class UsageError(ValueError):
  pass


def check(args) -> None:
  """Every input problem we can see before any work: one line each."""
  from wildactor_jax import fs
  from wildactor_jax.input.splits import SPLITS
  if not args.out.endswith(".json") or fs.isdir(args.out):
    raise UsageError(f"--out {args.out}: expected a .json file path")
  cli.refuse_existing("--out", args.out, args.out, args.overwrite)
  if args.split not in SPLITS:
    raise UsageError(f"--split {args.split}: expected one of {', '.join(SPLITS)} (the dataset's "
                     "identity-disjoint splits)")
  for flag, value in (("--steps", args.steps), ("--batches", args.batches)):
    if value is not None and value < 1:
      raise UsageError(f"{flag} {value}: expected an integer >= 1")
  if not args.raw and not (args.workdir and args.records):
    raise UsageError("nothing to evaluate: pass --workdir and --records (diagnostics) and/or "
                     "--raw (identity metrics)")
  if args.workdir and not fs.isdir(fs.join(args.workdir, "checkpoints")):
    raise UsageError(f"--workdir {args.workdir}: no checkpoints/ folder")
  if args.records and not fs.glob(fs.join(args.records, f"{args.split}-*.array_record")):
    raise UsageError(f"--records {args.records}: no {args.split}-*.array_record shards")
  if args.raw and not fs.exists(fs.join(args.raw, "manifest.jsonl")):
    raise UsageError(f"--raw {args.raw}: no manifest.jsonl")
  if args.raw and args.generated and fs.exists(fs.join(args.generated, "generated.jsonl")):
    from wildactor_jax.eval import generated
    generated.load(args.generated)  # bad rows fail here, before any training
  elif args.raw:
    if not args.workdir:
      raise UsageError("no generated clips (--generated DIR/generated.jsonl) and no --workdir "
                       "to generate them")
    folder = args.generated or os.path.splitext(args.out)[0] + "_clips"
    if fs.exists(folder) and fs.listdir(folder):
      raise UsageError(f"--generated {folder}: not empty and has no generated.jsonl; refusing "
                       "to write into it")
  if not 0.0 < args.test_fraction < 1.0:
    raise UsageError(f"--test-fraction {args.test_fraction}: expected a value in (0, 1)")
  try:
    seeds = [int(s) for s in args.seeds.split(",")]
  except ValueError:
    raise UsageError(f"--seeds {args.seeds}: expected comma-separated integers") from None
  if len(set(seeds)) < 2:
    raise UsageError(f"--seeds {args.seeds}: expected at least 2 distinct seeds")
  if args.batch < 1:
    raise UsageError(f"--batch {args.batch}: expected a positive number of clips")
  if args.autoencoder not in ("run", "none") and not (args.autoencoder.endswith(".npz")
                                                      and fs.exists(args.autoencoder)):
    raise UsageError(f"--autoencoder {args.autoencoder}: expected 'run', 'none' or an existing "
                     "learned autoencoder .npz")
  from wildactor_jax.infer.settings import MAX_SEED
  if not all(0 <= s <= MAX_SEED for s in seeds):
    raise UsageError(f"--seeds {args.seeds}: expected seeds in 0 .. {MAX_SEED}")


def autoencoder_roundtrip(args):
  """The roundtrip of the autoencoder --autoencoder names, or None."""
  from wildactor_jax.eval import generated
  if args.autoencoder == "none" or (args.autoencoder == "run" and not args.workdir):
    return None
  if args.autoencoder == "run":
    from wildactor_jax.infer import encoders
    from wildactor_jax.infer.restore import run_config
    return generated.roundtrip(encoders.vae_from_config(run_config(args.workdir)))
  from wildactor_jax.models import video_autoencoder
  return generated.roundtrip(video_autoencoder.load(args.autoencoder))


def identity_part(args, log) -> dict:
  from wildactor_jax import fs
  from wildactor_jax.eval import embedder, generated, probes, protocol, raw
  ds = raw.load(args.raw)
  held_out = raw.held_out(ds.actors, args.test_fraction)
  train_actors = [a for a in ds.actors if a not in held_out]
  if len(held_out) < 2 or len(train_actors) < 2:
    raise UsageError(f"--raw {args.raw}: {len(held_out)} held-out and {len(train_actors)} "
                     "training actors; the benchmark needs at least 2 of each")
  if args.embedder and fs.exists(args.embedder):
    net = embedder.load(args.embedder)
  else:
    log(f"training the identity embedder on {len(train_actors)} actors")
    net = protocol.fit_embedder(ds, train_actors, seed=args.seed)
  if args.probes and fs.exists(args.probes):
    probe = probes.load(args.probes)
  else:
    log(f"training the prompt probes on the clips of {len(train_actors)} actors")
    probe = protocol.fit_probes(ds, train_actors, seed=args.seed)
  if args.generated and fs.exists(fs.join(args.generated, generated.INDEX)):
    rows = generated.load(args.generated)
  else:
    folder = args.generated or os.path.splitext(args.out)[0] + "_clips"
    log(f"generating {len(held_out)} held-out actors into {folder}")
    rows = generated.generate(args.workdir, ds, held_out,
                              [int(s) for s in args.seeds.split(",")], folder, args.steps, log,
                              args.batch, first_frame=args.first_frame)
  result = protocol.score(ds, net, probe, rows, held_out, args.seed,
                          roundtrip=autoencoder_roundtrip(args))
  if args.embedder and not fs.exists(args.embedder):
    embedder.save(net, args.embedder)
  if args.probes and not fs.exists(args.probes):
    probes.save(probe, args.probes)
  return result


def diagnostics_part(args) -> dict:
  from wildactor_jax.eval import diagnostics
  from wildactor_jax.infer import load_run
  run = load_run(args.workdir)
  return dict(diagnostics.run(run.model, run.config, args.records, args.split,
                              max_batches=args.batches, seed=args.seed), checkpoint_step=run.step)


def run(args, log=lambda m: print(m, file=sys.stderr, flush=True)) -> dict:
  check(args)
  result = {"split": args.split}
  if args.raw:
    result["identity"] = identity_part(args, log)
    result["summary"] = result["identity"].pop("summary")
  if args.workdir and args.records:
    result["diagnostics"] = diagnostics_part(args)
  return result


def json_safe(obj):
  """NaN (an empty view bin, an unscored attribute) -> null, so eval.json is strict JSON."""
  if isinstance(obj, dict):
    return {k: json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  if isinstance(obj, float) and obj != obj:
    return None
  return obj


def main(argv=None) -> int:
  from wildactor_jax import fs
  from wildactor_jax.eval.raw import RawDataError
  from wildactor_jax.media import MediaError
  args = parse_args(argv)
  try:
    result = run(args)
  except (UsageError, RawDataError, MediaError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("error: interrupted", file=sys.stderr)
    return cli.INTERRUPTED
  result = json_safe(result)
  fs.atomic_write_json(args.out, result, allow_nan=False)
  print(json.dumps(result.get("summary", {})), flush=True)
  return 0


if __name__ == "__main__":
  cli.script_exit(main())
