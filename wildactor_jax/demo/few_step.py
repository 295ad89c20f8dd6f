"""`python -m wildactor_jax.demo --few-step --out demo_out`: the demo's WildActor run distilled
into a 4-step student, measured against its 25-step guided teacher (after `make demo`).

1. distil the demo's run (`python -m wildactor_jax.distill --config configs/demo_tiny.py:distill`,
   OUT/work/few_step_run) -> 2. `python -m wildactor_jax.evaluate` on both arms: the same held-out
   actors, prompts and seeds, the same readers as the demo's own evaluation (its identity embedder
   and prompt probes), both axes of the benchmark (OUT/few_step/{teacher,student}.json and their
   clips) -> 3. wall time per clip, each arm on its own in this process (after one clip of
   compilation) -> 4. the paired difference student - teacher of every per-clip figure
   (eval/protocol.compare: retrieval, identity similarity, prompt adherence, copy-paste, dynamic
   degree, ...; clips paired by condition, actor and seed, interval over identities) ->
   OUT/few_step/few_step_cpu.jsonl, one line per arm (--record: also that file, e.g.
   benchmarks/results/few_step_cpu.jsonl).

Finished stages are reused (delete OUT/few_step or OUT/work/few_step_run to redo them). Every
figure comes from the two evaluations: each arm's line holds the `summary` evaluate.py writes.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time

from wildactor_jax.demo import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONDITIONS = ("with_refs", "without_refs", "swapped")
DYNAMIC_DEGREE_FLOOR = 0.9  # the bar: the student's not below the teacher's by > 10%


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m wildactor_jax.demo --few-step", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--few-step", dest="few_step", action="store_true", required=True)
  p.add_argument("--out", default="demo_out", help="a finished demo's output folder")
  p.add_argument("--teacher", help="the WildActor run to distil (default OUT/work/wildactor_run)")
  p.add_argument("--raw", help="the raw synthetic dataset (default OUT/work/raw)")
  p.add_argument("--embedder", help="the identity embedder .npz (default: the demo's, see "
                 "`readers`)")
  p.add_argument("--probes", help="the prompt probes .npz (default: the demo's)")
  p.add_argument("--distill-steps", dest="distill_steps", type=int,
                 help="generator updates (default: configs/demo_tiny.py:distill)")
  p.add_argument("--timing-clips", dest="timing_clips", type=int, default=4,
                 help="clips timed per arm, after one clip of compilation")
  p.add_argument("--record", help="also write the arms' lines to this .jsonl (replaced)")
  p.add_argument("--quick", action="store_true", help="a few steps of each stage (smoke test)")
  return p.parse_args(argv)


def readers(out: str) -> dict:
  """The benchmark's readers the demo evaluates with: the embedder and probes of its pretrained
  parts (OUT/assets when --from-scratch re-created them, else the shipped ones) when their
  assets.json lists them, else those the demo's evaluation trained into OUT (evaluate trains
  and saves them there when missing). Both arms are scored by the same two."""
  from wildactor_jax import fs
  from wildactor_jax.demo import assets
  for folder in (os.path.join(out, "assets"), assets.SHIPPED):
    if fs.exists(fs.join(folder, assets.MANIFEST)):
      files = assets.verify(folder)["files"]
      if assets.EMBEDDER in files and assets.PROBES in files:
        return {"embedder": os.path.join(folder, assets.EMBEDDER),
                "probes": os.path.join(folder, assets.PROBES)}
  return {"embedder": os.path.join(out, "embedder.npz"), "probes": os.path.join(out, "probes.npz")}


def _paths(args) -> dict:
  out = os.path.abspath(args.out)
  paths = {"out": out, "work": os.path.join(out, "few_step"),
           "teacher": os.path.abspath(args.teacher or os.path.join(out, "work", "wildactor_run")),
           "raw": os.path.abspath(args.raw or os.path.join(out, "work", "raw")),
           "student": os.path.join(out, "work", "few_step_run")}
  if not os.path.isfile(os.path.join(paths["teacher"], "config.json")):
    raise SystemExit(f"demo --few-step: {paths['teacher']} is not a finished run; run `make demo` "
                     "first (or pass --teacher)")
  if not os.path.isfile(os.path.join(paths["raw"], "manifest.jsonl")):
    raise SystemExit(f"demo --few-step: {paths['raw']}: no manifest.jsonl (pass --raw)")
  found = readers(out)
  paths["embedder"] = os.path.abspath(args.embedder) if args.embedder else found["embedder"]
  paths["probes"] = os.path.abspath(args.probes) if args.probes else found["probes"]
  return paths


def distil(py: str, paths: dict, logs: str, args) -> None:
  """Stage 1: the teacher's data and text encoder flags, from its own config.json."""
  from wildactor_jax import fs
  tc = fs.read_json(os.path.join(paths["teacher"], "config.json"))
  flags = [f"--config.distill.teacher_workdir={paths['teacher']}",
           f"--config.data.records={tc['data']['records']}",
           f"--config.text_encoder.path={tc['text_encoder']['path']}",
           f"--config.text_encoder.tokenizer_path={tc['text_encoder']['tokenizer_path']}"]
  if args.quick:
    flags += ["--config.distill.train_steps=4", "--config.distill.warmup_steps=1",
              "--config.distill.log_every=2", "--config.checkpoint.every=2"]
  elif args.distill_steps:
    flags.append(f"--config.distill.train_steps={args.distill_steps}")
  from wildactor_jax.config_lib import load_config_file
  cfg = load_config_file(os.path.join(ROOT, "configs", "demo_tiny.py") + ":distill")
  steps = 4 if args.quick else (args.distill_steps or int(cfg.distill.train_steps))
  pipeline.sh([py, "-m", "wildactor_jax.distill", "--config", "configs/demo_tiny.py:distill",
               "--workdir", paths["student"], *flags], os.path.join(logs, "1_distill.log"), steps,
              "step LoRA")


def evaluate(py: str, paths: dict, arm: str, logs: str, quick: bool) -> dict:
  """Stage 2: one arm through `python -m wildactor_jax.evaluate` (reused when done)."""
  out = os.path.join(paths["work"], f"{arm}.json")
  if not os.path.exists(out):
    workdir = paths["student" if arm == "student" else "teacher"]
    pipeline.sh([py, "-m", "wildactor_jax.evaluate", "--workdir", workdir, "--raw", paths["raw"],
                 "--out", out, "--generated", os.path.join(paths["work"], f"{arm}_clips"),
                 "--seeds", "0,1", "--test-fraction", str(pipeline.TEST_FRACTION),
                 "--embedder", paths["embedder"], "--probes", paths["probes"],
                 *(["--steps", "2"] if quick else [])],
                os.path.join(logs, f"2_evaluate_{arm}.log"))
  from wildactor_jax import fs
  return fs.read_json(out)


def time_clips(workdir: str, raw: str, count: int, quick: bool) -> dict:
  """Stage 3: seconds per clip (prompt and references encoded, sampled, decoded) of a run with
  its own sampling settings, median over `count` held-out actors after one compile clip."""
  import numpy as np
  from wildactor_jax import inference, media
  from wildactor_jax.eval import generated, raw as raw_lib
  from wildactor_jax.infer import encoders, load_run
  from wildactor_jax.infer.settings import settings_from_config
  run = load_run(workdir)
  s = settings_from_config(run.config, steps=2 if quick else None)
  vae, text = encoders.vae_from_config(run.config), encoders.text_encoder_from_config(run.config)
  ds = raw_lib.load(raw)
  actors = raw_lib.held_out(ds.actors, pipeline.TEST_FRACTION)[:count + 1]
  seconds, denoise = [], []
  for actor in actors:  # the references the benchmark gives (eval/generated.py)
    chosen = generated.benchmark_references(ds, actor, int(run.config.data.get("max_faces", 2)),
                                            int(run.config.data.get("max_bodies", 2)))
    images = [media.load_reference(p, s.height, s.width, "reference") for p, _, _ in chosen]
    t0 = time.perf_counter()
    with run.sharding():
      _, timings = inference.generate(run.model, vae, text, ds.clips_of(actor)[0].prompt, images,
                                      [k for _, k, _ in chosen], s)
    seconds.append(time.perf_counter() - t0)
    denoise.append(timings["denoise_s"])
  return {"steps": s.steps, "cfg": s.cfg, "solver": s.solver,
          "forward_passes": inference.forward_passes(s),
          "seconds_per_clip": float(np.median(seconds[1:])),
          "denoise_seconds_per_clip": float(np.median(denoise[1:])),
          "first_clip_seconds_with_compile": seconds[0], "timed_clips": len(seconds) - 1}


def paired_differences(student: dict, teacher: dict, seed: int = 0) -> dict:
  """student - teacher of every per-clip figure of the benchmark (eval/protocol.compare: clips
  paired by condition, target actor and seed; bootstrap interval over identities), for each
  condition both evaluations hold -> {FIGURE_CONDITION: {"mean", "ci95", "n", "groups", "a"
  (teacher), "b" (student)}}."""
  from wildactor_jax.eval import protocol
  rows = {arm: d["identity"]["clips"] for arm, d in (("student", student), ("teacher", teacher))}
  out = {}
  for cond in CONDITIONS:
    if not all(any(r["condition"] == cond for r in rows[arm]) for arm in rows):
      continue
    for name, d in protocol.compare(rows["teacher"], rows["student"], cond, seed).items():
      out[f"{name}_{cond}"] = d
  return out


def checks(student_row: dict, teacher_row: dict, diffs: dict) -> dict:
  """The issue's bar: retrieval's paired interval includes 0 or favours the student; dynamic
  degree with references not more than 10% below the teacher's; >= 10x fewer forward passes per
  clip. A figure the evaluations lack leaves its check None (not passed)."""
  ratio = teacher_row["forward_passes"] / student_row["forward_passes"]
  out = {"forward_pass_ratio": ratio, "forward_passes_10x_fewer": ratio >= 10.0,
         "retrieval_within_teacher": None, "dynamic_degree_ratio": None,
         "dynamic_degree_kept": None}
  d = diffs.get("retrieval_top1_with_refs")
  if d and d["ci95"][1] is not None:
    out["retrieval_within_teacher"] = bool(d["ci95"][1] >= 0.0)
  key = "dynamic_degree_with_refs"
  t, s = teacher_row.get(key), student_row.get(key)
  if isinstance(t, (int, float)) and isinstance(s, (int, float)) and t > 0:
    out["dynamic_degree_ratio"] = s / t
    out["dynamic_degree_kept"] = bool(s >= DYNAMIC_DEGREE_FLOOR * t)
  out["done"] = all(out[k] is True for k in ("forward_passes_10x_fewer",
                                               "retrieval_within_teacher", "dynamic_degree_kept"))
  return out


def run(args) -> int:
  from wildactor_jax import fs
  py = sys.executable
  paths = _paths(args)
  logs = os.path.join(paths["work"], "logs")
  os.makedirs(logs, exist_ok=True)
  t_start = time.time()
  print("[few-step] 1/4 distilling the demo's run into a 4-step step LoRA", flush=True)
  t0 = time.time()
  distil(py, paths, logs, args)
  distill_s = time.time() - t0  # ~0 when an earlier run's student is reused
  print("[few-step] 2/4 Actor-Bench on held-out actors: the teacher, then the student", flush=True)
  evals = {arm: evaluate(py, paths, arm, logs, args.quick) for arm in ("teacher", "student")}
  print("[few-step] 3/4 wall time per clip", flush=True)
  timing = {arm: time_clips(paths[arm], paths["raw"], args.timing_clips, args.quick)
            for arm in ("teacher", "student")}
  print("[few-step] 4/4 paired differences over identities", flush=True)
  diffs = paired_differences(evals["student"], evals["teacher"])
  date = datetime.date.today().isoformat()
  import flax
  import jax
  device = f"{jax.devices()[0].platform} ({os.cpu_count()} cores)"
  rows = {}
  for arm in ("teacher", "student"):
    held_out = evals[arm].get("identity", {}).get("held_out_actors", [])
    rows[arm] = {"arm": arm, **timing[arm], **evals[arm].get("summary", {}),
                 "held_out_actors": len(held_out), "seeds": [0, 1],
                 "command": "python -m wildactor_jax.demo " + shlex.join(args.argv),
                 "quick": bool(args.quick), "date": date, "measured": True,
                 "device": device, "jax": jax.__version__, "flax": flax.__version__}
  rows["student"]["paired_difference_vs_teacher"] = diffs
  rows["student"]["checks"] = checks(rows["student"], rows["teacher"], diffs)
  rows["student"]["distill_s"] = distill_s
  rows["student"]["total_s"] = time.time() - t_start
  text = "".join(json.dumps(rows[a]) + "\n" for a in ("teacher", "student"))
  fs.atomic_write_text(os.path.join(paths["work"], "few_step_cpu.jsonl"), text)
  if args.record:
    fs.atomic_write_text(args.record, text)
  keys = ("steps", "cfg", "forward_passes", "seconds_per_clip", "retrieval_top1_with_refs",
          "retrieval_top1_with_refs_ci95", "dynamic_degree_with_refs",
          "prompt_adherence_with_refs", "copy_paste_with_refs")
  for arm in ("teacher", "student"):
    print(json.dumps({"arm": arm, **{k: rows[arm].get(k) for k in keys}}), flush=True)
  print(json.dumps({"paired_retrieval_top1_with_refs": diffs.get("retrieval_top1_with_refs"),
                    **rows["student"]["checks"], "total_s": rows["student"]["total_s"]}),
        flush=True)
  return 0


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  args.argv = argv
  return run(args)
