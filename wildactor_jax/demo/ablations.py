"""`python -m wildactor_jax.demo --ablations`: the method and each ablation on one budget, paired.

The paper's ablations at demo scale: the method (configs/demo_tiny.py) against no AIPA (the
symmetric variant), no I-RoPE, uniform reference sampling, and prompts that describe the
appearance (identity through text). All share the demo's shipped autoencoder and frozen backbone
(pre-trained on captions that sometimes describe the person, so it knows those words); the first
four share the demo's data and differ in one config field, "describing" renders the same actors
and clips with describing prompts. Each is evaluated as the demo is (held-out actors, 2 seeds,
one embedder and one set of probes for all), on both axes, and compared with the method by a
PAIRED bootstrap over identities (the same actors, prompts and seeds in both arms): the table in
OUT/ablations.md and OUT/ablations.jsonl gives each figure, its difference from the method and
that difference's 95% interval. Finished stages are reused (a training workdir resumes at its
end, an evaluation's JSON is read back), so running this after `make demo` with the same --out
reuses its data, run and evaluation. `--variants no_aipa,no_irope` runs a subset (the method,
their paired baseline, always runs).
"""
from __future__ import annotations

import json
import os
import sys
import time

from wildactor_jax.demo import pipeline, stages

VARIANTS = (  # (name, configs/demo_tiny.py arg, what changes)
    ("method", "", "WildActor: AIPA, I-RoPE, viewpoint-adaptive sampling, motion-only prompts"),
    ("no_aipa", "no_aipa", "symmetric attention: references also read the noisy video"),
    ("no_irope", "no_irope", "references at the video's own positions (frame 0)"),
    ("uniform", "uniform", "references drawn uniformly at random"),
    ("describing", "describing", "prompts spell out the appearance (identity through text)"))
# (summary key, per-clip figure for the paired difference or None, column title)
COLUMNS = (("retrieval_top1_with_refs", "retrieval_top1", "retrieval with refs"),
           ("retrieval_top1_without_refs", None, "without refs"),
           ("retrieval_top1_swapped_follows_refs", None, "swapped follows refs"),
           ("prompt_adherence_with_refs", "prompt_adherence", "prompt adherence"),
           ("copy_paste_with_refs", "copy_paste", "copy-paste"),
           ("dynamic_degree_with_refs", "dynamic_degree", "dynamic degree"),
           ("yaw_error_with_refs", "yaw_error", "yaw error (deg)"),
           ("identity_similarity_with_refs", "identity_similarity", "identity similarity"),
           ("reference_effect_identity_similarity", None,
            "identity similarity gained from refs (paired, within the variant)"))


def _cell(summary: dict, key: str) -> str:
  v, ci = summary.get(key), summary.get(f"{key}_ci95")
  if not isinstance(v, (int, float)):
    return "n/a"
  return f"{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and None not in ci else f"{v:.2f}"


def _diff(d: dict | None) -> str:
  if not d or d.get("mean") is None:
    return ""
  lo, hi = d["ci95"]
  mark = "" if lo <= 0.0 <= hi else " *"
  return f"<br>{d['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}]{mark}"


def table(rows: list[dict]) -> list[str]:
  head = ["variant", *(title for _, _, title in COLUMNS)]
  lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  for r in rows:
    s, paired = r["summary"], r.get("paired_vs_method", {})
    cells = [_cell(s, key) + (_diff(paired.get(fig)) if fig else "") for key, fig, _ in COLUMNS]
    lines.append("| " + " | ".join([r["variant"], *cells]) + " |")
  return lines


def chosen_variants(names: tuple[str, ...] | None) -> list[tuple[str, str, str]]:
  """The method (every ablation's paired baseline) and the named ablations (None: all); an
  unknown or empty list stops the demo with one line before any work."""
  known = [name for name, _, _ in VARIANTS if name != "method"]
  bad = [n for n in names or () if n not in known]
  if names is not None and (not names or bad):
    raise SystemExit(f"demo --ablations --variants {','.join(names)}: expected a comma-separated "
                     f"subset of {', '.join(known)}")
  return [v for v in VARIANTS if v[0] == "method" or names is None or v[0] in names]


def run(args) -> int:
  chosen = chosen_variants(args.variants)
  from wildactor_jax import fs
  from wildactor_jax.demo import assets
  from wildactor_jax.eval import protocol
  py = sys.executable
  out = os.path.abspath(args.out)
  logs = os.path.join(out, "logs")
  os.makedirs(logs, exist_ok=True)
  lora_flags = pipeline.stage_flags(args)
  parts = pipeline.pretrained(py, args, out, logs)
  t_start = time.time()
  rows, method_clips = [], None
  for name, arg, what in chosen:
    t0 = time.time()
    print(f"[ablations] {name}: {what}", flush=True)
    work = os.path.join(out, "work" if name != "describing" else "work_describing")
    data = stages.prepare_data(py, work, logs, args.actors, args.clips_per_actor,
                               parts["autoencoder"],
                               describe=name == "describing",
                               tag="" if name != "describing" else "_describing")
    backbone = assets.install_backbone(parts["backbone"], os.path.join(work, "backbone"))
    workdir = os.path.join(work, "wildactor_run" if name == "method" else f"ablation_{name}")
    config = "configs/demo_tiny.py" + (f":{arg}" if arg else "")
    stages.train(py, config, workdir,
                 [*data["common"], f"--config.backbone_path={backbone}", *lora_flags],
                 os.path.join(logs, f"6_{name}.log"), name)
    eval_name = "eval" if name == "method" else f"eval_{name}"
    eval_json = os.path.join(out, f"{eval_name}.json")
    if not fs.exists(eval_json):  # the demo's own run of the method, or an earlier ablation run
      pipeline.evaluate(py, workdir, data, out, eval_name, logs, parts, args.quick)
    ev = fs.read_json(eval_json)
    clips = ev["identity"]["clips"]
    # An evaluation written before the summary carried the references' paired effect.
    for fig, d in protocol.reference_effect(clips).items():
      ev["summary"].setdefault(f"reference_effect_{fig}", d["mean"])
      ev["summary"].setdefault(f"reference_effect_{fig}_ci95", d["ci95"])
    if name == "method":
      method_clips = clips
    paired = {} if name == "method" else {
        fig: d for fig, d in protocol.compare(method_clips, clips).items()
        if fig in {f for _, f, _ in COLUMNS}}
    row = {"variant": name, "change": what, "config": config, "summary": ev["summary"],
           "paired_vs_method": paired,
           "seconds": round(time.time() - t0, 1)}
    rows.append(row)
    print(json.dumps({"variant": name, **{k: ev["summary"].get(k) for k, _, _ in COLUMNS}}),
          flush=True)
  lines = ["# Ablations at demo scale", "",
           f"{len(rows)} variants, {time.time() - t_start:.0f} s. Held-out actors, 2 seeds; mean "
           "[bootstrap 95% interval over identities]; under each ablation's figure, its paired "
           "difference from the method (ablation - method, same actors, prompts and seeds) with "
           "its 95% interval, * where the interval excludes 0.", "", *table(rows), ""]
  fs.atomic_write_text(os.path.join(out, "ablations.md"), "\n".join(lines))
  fs.atomic_write_text(os.path.join(out, "ablations.jsonl"),
                       "".join(json.dumps(r) + "\n" for r in rows))
  print("\n".join(lines), flush=True)
  return 0
