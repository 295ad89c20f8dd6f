"""`python -m wildactor_jax.demo --from-scratch`: re-create the demo's pretrained parts.

What the shipped wildactor_jax/demo/assets/ were made with, step for step (each a command of
this repository, each kept when a previous run finished it):

1. a pre-training corpus: CORPUS["actors"] synthetic actors rendered with seed CORPUS["seed"]
   (other identities than the demo's seed-0 actors, so its held-out actors are never seen), half
   of its captions describing the person's appearance (as web captions sometimes do: the
   backbone then knows those words, which the text-identity ablation uses);
2. the learned video autoencoder trained on the corpus clips
   (`python -m wildactor_jax.demo.autoencoder --steps AUTOENCODER_STEPS --seed 0`);
3. the corpus built and encoded with it; the toy backbone pre-trained on it
   (`python -m wildactor_jax.train --config configs/demo_tiny.py:backbone`, its steps and seed in
   the config) and exported in bfloat16 (demo/assets.py);
4. the benchmark's readers trained on the corpus's real renders: the identity embedder and the
   prompt probes (`python -m wildactor_jax.demo.readers`);
5. OUT/assets/assets.json describing the four files (sha256, commands, versions).

Hours on 2 CPU cores (the backbone most of it); the demo then runs on the re-created files.
Bit-for-bit equality with the shipped files needs the same jax/XLA build and thread count;
assets.json records the versions.
"""
from __future__ import annotations

import os

from wildactor_jax.demo import assets, stages

CORPUS = {"actors": 1200, "clips_per_actor": 2, "seed": 1, "describe_fraction": 0.5}
CORPUS_TEST_FRACTION = 0.02  # a few corpus actors held out, for the pre-training's eval loss
AUTOENCODER_STEPS = 1500


def run(py: str, args, work: str, logs: str, out: str) -> str:
  """Re-creates the four assets into `out`; returns `out`."""
  os.makedirs(out, exist_ok=True)
  raw = stages.render(py, os.path.join(work, "raw"), logs, CORPUS["actors"],
                      CORPUS["clips_per_actor"], CORPUS["seed"], CORPUS["describe_fraction"],
                      tag="_corpus")
  autoencoder = os.path.join(out, assets.AUTOENCODER)
  ae_cmd = ["-m", "wildactor_jax.demo.autoencoder", "--raw", raw, "--out", autoencoder,
            "--steps", str(3 if args.quick else AUTOENCODER_STEPS), "--seed", "0"]
  if not os.path.exists(autoencoder):
    stages.sh([py, *ae_cmd], os.path.join(logs, "0_autoencoder.log"))
  data = stages.prepare_data(py, work, logs, CORPUS["actors"], CORPUS["clips_per_actor"],
                             autoencoder, describe=CORPUS["describe_fraction"],
                             seed=CORPUS["seed"], test_fraction=CORPUS_TEST_FRACTION,
                             tag="_corpus")
  steps = ["--config.train.steps=" + str(args.backbone_steps)] if args.backbone_steps else []
  flags = [*data["common"], *(stages.QUICK if args.quick else []), *steps]
  run_dir = os.path.join(work, "backbone_run")
  stages.train(py, "configs/demo_tiny.py:backbone", run_dir, flags,
               os.path.join(logs, "0_backbone.log"), "backbone pre-training")
  assets.export_backbone(run_dir, os.path.join(out, assets.BACKBONE))
  readers = {assets.EMBEDDER: "--embedder", assets.PROBES: "--probes"}
  readers_cmd = ["-m", "wildactor_jax.demo.readers", "--raw", raw,
                 *(["--quick"] if args.quick else [])]
  for name, flag in readers.items():
    if not os.path.exists(os.path.join(out, name)):
      stages.sh([py, *readers_cmd, flag, os.path.join(out, name)],
                os.path.join(logs, f"0_{name[:-4]}.log"))
  corpus = dict(CORPUS, size=stages.SIZE, frames=stages.FRAMES,
                renderer="data/synthetic_actors.py")
  made_by = "python -m wildactor_jax.demo --from-scratch (wildactor_jax/demo/from_scratch.py)"
  describe = {
      assets.AUTOENCODER: {"dtype": "float16",
                           "command": "python -m wildactor_jax.demo.autoencoder --raw CORPUS "
                                      f"--out autoencoder.npz {' '.join(ae_cmd[6:])}"},
      assets.BACKBONE: {"dtype": "bfloat16",
                        "command": "python -m wildactor_jax.train --config "
                                   f"configs/demo_tiny.py:backbone {' '.join(steps)}".strip()},
      **{name: {"command": f"python -m wildactor_jax.demo.readers --raw CORPUS {flag} {name}"}
         for name, flag in readers.items()}}
  assets.describe(out, {name: dict(entry, made_by=made_by, corpus=corpus)
                        for name, entry in describe.items()})
  return out
