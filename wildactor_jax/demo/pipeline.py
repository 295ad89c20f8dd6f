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
the held-out actors with their references, without, and with swapped references (2 seeds), score
both axes with intervals -> 8. a 3-shot story of one held-out actor (`python -m
wildactor_jax.story`) -> 9. loss curves, a picture grid, report.md and summary.json. Every stage
is a real command of this repository; a console progress bar follows the training stage.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_ACTORS = 200  # 33 held out by the actor-hash rule (the benchmark asks for >= 32)
TEST_FRACTION = 0.2  # of the actors, held out by data/build_actor18m.py's actor-hash rule
SIZE, FRAMES = 64, 17  # the demo's clips: 64 x 64 px, 17 frames (5 latent frames)


STEP_LOG = re.compile(r"\] \[(\d+)\] .*\bloss=([0-9.eE+-]+)")


def sh(cmd: list[str], log: str, steps: int = 0, what: str = "") -> str:
  """Runs a repository command, logging its output; a failure stops the demo with the tail.
  With `steps`, a console progress bar follows the trainer's logged step and loss."""
  from tqdm import tqdm
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
             PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
  t0 = time.time()
  bar = tqdm(total=steps, desc=f"  {what}", unit="step", leave=False) if steps else None
  with open(log, "w") as fh:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    import threading
    out_lines: list[str] = []
    reader = threading.Thread(target=lambda: out_lines.extend(proc.stdout), daemon=True)
    reader.start()
    for line in proc.stderr:
      fh.write(line)
      fh.flush()  # the log can be followed while the stage runs
      match = STEP_LOG.search(line) if bar is not None else None
      if match:
        bar.update(int(match.group(1)) - bar.n)
        bar.set_postfix(loss=f"{float(match.group(2)):.3f}")
    proc.wait()
    reader.join()
    out = "".join(out_lines)
    fh.write("\n--- stdout ---\n" + out)
  if bar is not None:
    bar.close()
  if proc.returncode != 0:
    with open(log) as fh:
      tail = fh.read()[-2000:]
    raise SystemExit(f"demo: `{' '.join(cmd[:4])} ...` failed ({proc.returncode}); log {log}:\n{tail}")
  print(f"  done in {time.time() - t0:.0f}s", flush=True)
  return out


def last_json(text: str) -> dict:
  lines = [l for l in text.splitlines() if l.startswith("{")]
  return json.loads(lines[-1]) if lines else {}


def build_text_encoder(raw: str, out: str, d_model: int) -> tuple[str, str]:
  """A small random UMT5 (seed 0) over every word the synthetic prompts can contain
  (RAW/vocabulary.json): the same encoder for every dataset the renderer writes, so the shipped
  backbone, pre-trained with it, reads the demo's prompts."""
  from wildactor_jax.models import tokenizer, umt5
  with open(os.path.join(raw, "vocabulary.json")) as fh:
    words = sorted(json.load(fh))
  tok = tokenizer.build_demo_tokenizer(words, os.path.join(out, "tokenizer"))
  cfg = umt5.UMT5Config(vocab_size=len(words) + 3, d_model=d_model, d_kv=16, num_heads=2,
                        d_ff=2 * d_model, num_layers=2)
  umt5.save_random(os.path.join(out, "umt5"), cfg, seed=0, tokenizer_path=tok)
  return os.path.join(out, "umt5"), tok


def render(py: str, raw: str, logs: str, actors: int, clips_per_actor: int, seed: int = 0,
           describe: bool = False, tag: str = "") -> str:
  """Stage 1: the synthetic actors (kept when a previous run finished them)."""
  if not os.path.exists(os.path.join(raw, "manifest.jsonl")):
    sh([py, "data/synthetic_actors.py", "--out", raw, "--actors", str(actors),
        "--clips-per-actor", str(clips_per_actor), "--seed", str(seed), "--size", str(SIZE),
        "--frames", str(FRAMES), *(["--describe-appearance"] if describe else [])],
       os.path.join(logs, f"1_render{tag}.log"))
  return raw


def prepare_data(py: str, work: str, logs: str, actors: int, clips_per_actor: int,
                 autoencoder: str, describe: bool = False, seed: int = 0,
                 test_fraction: float = TEST_FRACTION, tag: str = "") -> dict:
  """Stages 1-4 into `work`: render, build (validated rows, identity splits), a small random
  UMT5 for the prompts, encode with `autoencoder` (.npz). -> {raw, enc, build, common (the
  trainers' data flags)}. describe: prompts that spell out the appearance (the text-identity
  ablation)."""
  raw, tfds_dir, enc = (os.path.join(work, d) for d in ("raw", "tfds", "encoded"))
  render(py, raw, logs, actors, clips_per_actor, seed, describe, tag)
  # Each stage's output is reused when a previous run finished it (its last file written).
  build_json = os.path.join(work, "build_summary.json")
  if not os.path.exists(build_json):
    build = last_json(sh([py, "-m", "data.build_actor18m", "--manifest",
                          os.path.join(raw, "manifest.jsonl"), "--out", tfds_dir,
                          "--test-fraction", str(test_fraction)],
                         os.path.join(logs, f"2_build{tag}.log")))
    with open(build_json, "w") as fh:
      json.dump(build, fh)
  with open(build_json) as fh:
    build = json.load(fh)
  te_path = os.path.join(work, "text", "umt5")
  tok = os.path.join(work, "text", "tokenizer", "tokenizer.json")
  if not os.path.exists(os.path.join(te_path, "config.json")):
    from wildactor_jax.config_lib import load_config_file
    demo_cfg = load_config_file(os.path.join(ROOT, "configs", "demo_tiny.py"))
    te_path, tok = build_text_encoder(raw, os.path.join(work, "text"),
                                      int(demo_cfg.model.text_dim))
  common = [f"--config.text_encoder.path={te_path}", f"--config.text_encoder.tokenizer_path={tok}",
            f"--config.data.records={enc}", f"--config.vae.path={autoencoder}"]
  # The encoder itself skips the shards a previous run finished.
  sh([py, "-m", "wildactor_jax.encode", "--config", "configs/demo_tiny.py", "--records",
      tfds_dir, "--out", enc, "--dtype", "float32", *common],
     os.path.join(logs, f"4_encode{tag}.log"))
  return {"raw": raw, "enc": enc, "build": build, "common": common}


def train(py: str, config: str, workdir: str, flags: list[str], log: str, what: str) -> None:
  """One training stage with a console progress bar (a finished workdir resumes at its end)."""
  from wildactor_jax.config_lib import load_config_file
  cfg = load_config_file(os.path.join(ROOT, config))
  steps = [f for f in flags if f.startswith("--config.train.steps=")]
  total = int(steps[-1].split("=")[1]) if steps else int(cfg.train.steps)
  sh([py, "-m", "wildactor_jax.train", "--config", config, "--workdir", workdir, *flags], log,
     total, what)


def backbone_and_autoencoder(py: str, args, out: str, logs: str) -> tuple[str, str]:
  """Stage 5's inputs: (autoencoder .npz, backbone .npz): the shipped ones (verified), or with
  --from-scratch re-created into OUT/assets first."""
  from wildactor_jax.demo import assets
  folder = assets.SHIPPED
  if args.from_scratch:
    from wildactor_jax.demo import from_scratch
    folder = from_scratch.run(py, args, os.path.join(out, "pretraining"), logs,
                              os.path.join(out, "assets"))
  assets.verify(folder)
  return os.path.join(folder, assets.AUTOENCODER), os.path.join(folder, assets.BACKBONE)


def evaluate(py: str, workdir: str, data: dict, out: str, name: str, logs: str,
             embedder: str, quick: bool) -> str:
  """Stage 7: `python -m wildactor_jax.evaluate` on the held-out actors -> OUT/<name>.json."""
  eval_json = os.path.join(out, f"{name}.json")
  sh([py, "-m", "wildactor_jax.evaluate", "--workdir", workdir, "--records", data["enc"],
      "--split", "test", "--raw", data["raw"], "--out", eval_json, "--generated",
      os.path.join(out, f"{name}_clips"), "--seeds", "0,1", "--test-fraction", str(TEST_FRACTION),
      "--embedder", embedder, "--probes", os.path.join(out, "probes.npz"),
      *(["--steps", "3"] if quick else [])],
     os.path.join(logs, f"7_{name}.log"))
  return eval_json


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m wildactor_jax.demo")
  p.add_argument("--out", default="demo_out")
  p.add_argument("--actors", type=int, default=DEFAULT_ACTORS,
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
                      "(wildactor_jax/demo/ablations.py; 35 minutes on 2 cores after the demo)")
  return p.parse_args(argv)


QUICK = ["--config.train.steps=6", "--config.train.warmup_steps=2", "--config.checkpoint.every=3",
         "--config.train.eval_every=3", "--config.train.log_every=3"]


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
  autoencoder, backbone_npz = backbone_and_autoencoder(py, args, out, logs)
  stage("1-4/9 synthetic actors: render, build the dataset (identity splits), text encoder, "
        "encode")
  data = prepare_data(py, work, logs, args.actors, args.clips_per_actor, autoencoder)
  from wildactor_jax.demo import assets
  backbone = assets.install_backbone(backbone_npz, os.path.join(work, "backbone"))
  lora_flags = stage_flags(args)
  stage("6/9 training WildActor's reference LoRA on the frozen backbone")
  wa_work = os.path.join(work, "wildactor_run")
  train(py, "configs/demo_tiny.py", wa_work,
        [*data["common"], f"--config.backbone_path={backbone}", *lora_flags],
        os.path.join(logs, "6_wildactor.log"), "reference LoRA")
  stage("7/9 Actor-Bench on held-out actors: with, without and swapped references")
  eval_json = evaluate(py, wa_work, data, out, "eval", logs, os.path.join(out, "embedder.npz"),
                       args.quick)
  from wildactor_jax import fs
  from wildactor_jax.demo import report as demo_report
  ev = fs.read_json(eval_json)
  evaluation = dict(ev.get("identity", {}), summary=ev.get("summary", {}),
                    diagnostics=ev.get("diagnostics", {}))
  stage("8/9 a 3-shot story of one held-out actor (cut, continue, cut)")
  from wildactor_jax.demo import story as demo_story
  story = demo_story.tell_story(py, data["raw"], wa_work, out, evaluation["held_out_actors"][0],
                                os.path.join(out, "embedder.npz"), sh,
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
