"""The demo's stages as functions of this repository's commands, shared by the demo
(pipeline.py) and the re-creation of its pretrained parts (from_scratch.py): run a command with a
log and a progress bar, render synthetic actors, build + encode a dataset, train."""
from __future__ import annotations

import json
import os
import re
import subprocess
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
           describe: bool | float = False, tag: str = "") -> str:
  """Stage 1: the synthetic actors (kept when a previous run finished them). describe: True
  spells out the appearance in every prompt, a fraction P in a random share P of them."""
  if isinstance(describe, bool):
    flags = ["--describe-appearance"] if describe else []
  else:
    flags = ["--describe-fraction", str(describe)]
  if not os.path.exists(os.path.join(raw, "manifest.jsonl")):
    sh([py, "data/synthetic_actors.py", "--out", raw, "--actors", str(actors),
        "--clips-per-actor", str(clips_per_actor), "--seed", str(seed), "--size", str(SIZE),
        "--frames", str(FRAMES), *flags],
       os.path.join(logs, f"1_render{tag}.log"))
  return raw


def prepare_data(py: str, work: str, logs: str, actors: int, clips_per_actor: int,
                 autoencoder: str, describe: bool | float = False, seed: int = 0,
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


QUICK = ["--config.train.steps=6", "--config.train.warmup_steps=2", "--config.checkpoint.every=3",
         "--config.train.eval_every=3", "--config.train.log_every=3"]
