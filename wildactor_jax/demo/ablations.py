"""`python -m wildactor_jax.demo --ablations`: the method and each ablation on one budget.

The paper's ablations at demo scale: the method (configs/demo_tiny.py) against no AIPA (the
symmetric variant), no I-RoPE, uniform reference sampling, and prompts that describe the
appearance (identity through text). The first four share the demo's data and frozen backbone
and differ in one config field; "describing" renders the same actors with describing prompts,
pre-trains its own backbone on them (a pretrained text-to-video model knows the words) and
trains the method on top. Each is evaluated as the demo is (held-out actors, 2 seeds, one
embedder for all), and the table with bootstrap intervals goes to OUT/ablations.md and
OUT/ablations.jsonl. Finished stages are reused (a training workdir resumes at its end, an
evaluation's JSON is read back), so running this after `make demo` with the same --out reuses
its data, backbone, method run and evaluation.
"""
from __future__ import annotations

import json
import os
import sys
import time

from wildactor_jax.demo import pipeline

VARIANTS = (  # (name, configs/demo_tiny.py arg, what changes)
    ("method", "", "WildActor: AIPA, I-RoPE, viewpoint-adaptive sampling, motion-only prompts"),
    ("no_aipa", "no_aipa", "symmetric attention: references also read the noisy video"),
    ("no_irope", "no_irope", "references at the video's own positions (frame 0)"),
    ("uniform", "uniform", "references drawn uniformly at random"),
    ("describing", "describing", "prompts spell out the appearance (identity through text)"))
FIGURES = ("retrieval_top1_with_refs", "retrieval_top1_without_refs",
           "retrieval_top1_swapped_follows_refs", "identity_similarity_with_refs",
           "attribute_accuracy_with_refs")


def _cell(summary: dict, key: str) -> str:
  v, ci = summary.get(key), summary.get(f"{key}_ci95")
  if not isinstance(v, (int, float)):
    return "n/a"
  return f"{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{v:.2f}"


def table(rows: list[dict]) -> list[str]:
  head = ["variant", "retrieval with refs", "without refs", "swapped follows refs",
          "identity similarity", "attribute accuracy", "chance"]
  lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  for r in rows:
    s = r["summary"]
    lines.append("| " + " | ".join([r["variant"], *(_cell(s, k) for k in FIGURES),
                                    f"{s.get('chance', float('nan')):.3f}"]) + " |")
  return lines


def run(args) -> int:
  py = sys.executable
  out = os.path.abspath(args.out)
  logs = os.path.join(out, "logs")
  os.makedirs(logs, exist_ok=True)
  bb_flags, lora_flags = pipeline.stage_flags(args)
  embedder = os.path.join(out, "embedder.npz")
  from wildactor_jax import fs
  t_start = time.time()
  rows = []
  for name, arg, what in VARIANTS:
    t0 = time.time()
    print(f"[ablations] {name}: {what}", flush=True)
    work = os.path.join(out, "work" if name != "describing" else "work_describing")
    data = pipeline.prepare_data(py, work, logs, args.actors, args.clips_per_actor,
                                 describe=name == "describing")
    backbone = os.path.join(work, "backbone")
    if name in ("method", "describing"):
      backbone = pipeline.train_backbone(py, work, logs, data["common"], bb_flags)
    workdir = os.path.join(work, "wildactor_run" if name == "method" else f"ablation_{name}")
    config = "configs/demo_tiny.py" + (f":{arg}" if arg else "")
    pipeline.train(py, config, workdir,
                   [*data["common"], f"--config.backbone_path={backbone}", *lora_flags],
                   os.path.join(logs, f"6_{name}.log"), name)
    eval_name = "eval" if name == "method" else f"eval_{name}"
    eval_json = os.path.join(out, f"{eval_name}.json")
    if not fs.exists(eval_json):  # the demo's own run of the method, or an earlier ablation run
      pipeline.evaluate(py, workdir, data, out, eval_name, logs, embedder, args.quick)
    ev = fs.read_json(eval_json)
    row = {"variant": name, "change": what, "config": config, "summary": ev["summary"],
           "diagnostics": ev.get("diagnostics", {}), "seconds": round(time.time() - t0, 1)}
    rows.append(row)
    print(json.dumps({"variant": name, **{k: ev["summary"].get(k) for k in FIGURES}}),
          flush=True)
  lines = ["# Ablations at demo scale", "",
           f"{len(rows)} variants, {time.time() - t_start:.0f} s. Held-out actors, 2 seeds; mean "
           "[bootstrap 95% interval over identities].", "", *table(rows), ""]
  fs.atomic_write_text(os.path.join(out, "ablations.md"), "\n".join(lines))
  fs.atomic_write_text(os.path.join(out, "ablations.jsonl"),
                       "".join(json.dumps(r) + "\n" for r in rows))
  print("\n".join(lines), flush=True)
  return 0
