"""`make demo`: the whole system end to end on CPU, on the embedded synthetic actors.

    python -m wildactor_jax.demo --out demo_out [--actors 200 --clips-per-actor 2 --quick]
    python -m wildactor_jax.demo --from-scratch --out demo_out   # also re-create the pretrained parts

1. render synthetic actors (data/synthetic_actors.py: identity only in the references, which are
unlike the clips: other poses, views, scales, places, crops of other clips; moving figures and
camera moves) -> 2. build the raw ArrayRecord dataset with row validation and identity splits
(data/build_actor18m.py) -> 3. a small random UMT5 over the prompts' vocabulary -> 4. encode
records with the learned video autoencoder -> 5. the frozen backbone: the shipped one
(wildactor_jax/demo/assets/, checked by sha256), or with --from-scratch re-created (a pre-training
corpus of other actors, the autoencoder trained on it, the backbone pre-trained on it:
wildactor_jax/demo/from_scratch.py) -> 6. train WildActor's reference LoRA on it
(configs/demo_tiny.py) -> 7. the Actor-Bench analog (`python -m wildactor_jax.evaluate`): generate
the held-out actors with their references, without, and with swapped references (2 seeds), and
with references continuing each clip's own first frame (the frozen backbone's bound), score both
axes with intervals -> 8. a 3-shot story of one held-out actor (`python -m
wildactor_jax.story`) -> 9. loss curves, a picture grid, report.md and summary.json. Every stage
is a real command of this repository; a console progress bar follows the training stage.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from wildactor_jax.demo import stages
from wildactor_jax.demo.stages import QUICK, TEST_FRACTION, prepare_data, sh, train


def pretrained(py: str, args, out: str, logs: str) -> dict:
  """Stage 5's inputs, {autoencoder, backbone, embedder, probes} -> .npz paths: the shipped ones
  (verified against assets.json), or with --from-scratch re-created into OUT/assets first."""
  from wildactor_jax.demo import assets
  folder = assets.SHIPPED
  if args.from_scratch:
    from wildactor_jax.demo import from_scratch
    folder = from_scratch.run(py, args, os.path.join(out, "pretraining"), logs,
                              os.path.join(out, "assets"))
  assets.verify(folder)
  return {name: os.path.join(folder, f) for name, f in
          (("autoencoder", assets.AUTOENCODER), ("backbone", assets.BACKBONE),
           ("embedder", assets.EMBEDDER), ("probes", assets.PROBES))}


def evaluate(py: str, workdir: str, data: dict, out: str, name: str, logs: str,
             parts: dict, quick: bool, first_frame: bool = False) -> str:
  """Stage 7: `python -m wildactor_jax.evaluate` on the held-out actors -> OUT/<name>.json
  (first_frame: with the first-frame diagnostic, the frozen backbone's bound). A rerun of the
  demo into the same OUT scores again and replaces the report, as the demo's own output."""
  eval_json = os.path.join(out, f"{name}.json")
  sh([py, "-m", "wildactor_jax.evaluate", "--workdir", workdir, "--records", data["enc"],
      "--split", "test", "--raw", data["raw"], "--out", eval_json, "--overwrite", "--generated",
      os.path.join(out, f"{name}_clips"), "--seeds", "0,1", "--test-fraction", str(TEST_FRACTION),
      "--embedder", parts["embedder"], "--probes", parts["probes"],
      *(["--steps", "3"] if quick else []), *(["--first-frame"] if first_frame else [])],
     os.path.join(logs, f"7_{name}.log"))
  return eval_json


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m wildactor_jax.demo")
  p.add_argument("--out", default="demo_out")
  p.add_argument("--actors", type=int, default=stages.DEFAULT_ACTORS,
                 help="identities (a fifth held out)")
  p.add_argument("--clips-per-actor", type=int, default=2)
  p.add_argument("--backbone-steps", type=int, default=None,
                 help="with --from-scratch: the backbone's pre-training steps")
  p.add_argument("--lora-steps", type=int, default=None)
  p.add_argument("--quick", action="store_true", help="a few steps of each stage (smoke test)")
  p.add_argument("--from-scratch", action="store_true",
                 help="re-create the shipped autoencoder and backbone first (hours on 2 cores; "
                      "wildactor_jax/demo/from_scratch.py)")
  p.add_argument("--ablations", action="store_true",
                 help="train and evaluate the method and each ablation on one budget "
                      "(wildactor_jax/demo/ablations.py; about 40 minutes on 2 cores after the "
                      "demo)")
  p.add_argument("--variants", type=_variant_list, default=None,
                 help="with --ablations: a comma-separated subset of the ablations to run "
                      "(e.g. no_aipa,no_irope); the method, their paired baseline, always runs")
  args = p.parse_args(argv)
  if args.variants is not None and not args.ablations:
    p.error("--variants: only with --ablations")
  return args


def _variant_list(text: str) -> tuple[str, ...]:
  """'no_aipa,no_irope' -> ('no_aipa', 'no_irope') (names checked by `ablations.run`)."""
  return tuple(n.strip() for n in text.split(",") if n.strip())


def stage_flags(args) -> list[str]:
  """The LoRA trainer's step overrides."""
  lora = [f"--config.train.steps={args.lora_steps}"] if args.lora_steps else []
  return (QUICK if args.quick else []) + lora


def run(args) -> int:
  """The demo (see the module docstring); args from `parse_args`."""
  py = sys.executable
  out = os.path.abspath(args.out)
  work = os.path.join(out, "work")
  logs = os.path.join(out, "logs")
  os.makedirs(logs, exist_ok=True)
  t_start = time.time()
  starts: list[tuple[str, float]] = []

  def stage(name):
    print(f"[demo] {name}", flush=True)
    starts.append((name, time.time()))

  stage("5/9 the pretrained parts: learned video autoencoder and frozen toy backbone" +
        (" (re-created from scratch)" if args.from_scratch else " (shipped)"))
  parts = pretrained(py, args, out, logs)
  stage("1-4/9 synthetic actors: render, build the dataset (identity splits), text encoder, "
        "encode")
  data = prepare_data(py, work, logs, args.actors, args.clips_per_actor, parts["autoencoder"])
  from wildactor_jax.demo import assets
  backbone = assets.install_backbone(parts["backbone"], os.path.join(work, "backbone"))
  lora_flags = stage_flags(args)
  stage("6/9 training WildActor's reference LoRA on the frozen backbone")
  wa_work = os.path.join(work, "wildactor_run")
  train(py, "configs/demo_tiny.py", wa_work,
        [*data["common"], f"--config.backbone_path={backbone}", *lora_flags],
        os.path.join(logs, "6_wildactor.log"), "reference LoRA")
  stage("7/9 Actor-Bench on held-out actors: with, without and swapped references, and from "
        "the true first frame")
  eval_json = evaluate(py, wa_work, data, out, "eval", logs, parts, args.quick,
                       first_frame=True)
  from wildactor_jax import fs
  from wildactor_jax.demo import report as demo_report
  ev = fs.read_json(eval_json)
  evaluation = dict(ev.get("identity", {}), summary=ev.get("summary", {}),
                    diagnostics=ev.get("diagnostics", {}))
  stage("8/9 a 3-shot story of one held-out actor (cut, continue, cut)")
  from wildactor_jax.demo import story as demo_story
  story = demo_story.tell_story(py, data["raw"], wa_work, out, evaluation["held_out_actors"][0],
                                parts["embedder"], sh,
                                os.path.join(logs, "8_story.log"), quick=args.quick)
  stage("9/9 report")
  ends = [t for _, t in starts[1:]] + [time.time()]
  stage_s = {name: round(end - t, 1) for (name, t), end in zip(starts, ends)}
  summary = demo_report.write_report(out, data["raw"], wa_work, data["build"],
                                     evaluation, stage_s, total_s=time.time() - t_start,
                                     quick=args.quick, story=story)
  headline = ("retrieval_top1_with_refs", "retrieval_top1_without_refs",
              "retrieval_top1_swapped_follows_refs", "chance", "fidelity_real_split",
              "fidelity_with_refs", "total_s")
  print(json.dumps({k: summary.get(k) for k in headline}), flush=True)
  print(f"[demo] report: {os.path.join(out, 'report.md')}", flush=True)
  return 0
