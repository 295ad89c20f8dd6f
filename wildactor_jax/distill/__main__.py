"""python -m wildactor_jax.distill --config configs/X.py[:arg] --workdir W
    --config.distill.teacher_workdir=T [--config.a.b=v ...]

Distils a finished WildActor run T (its frozen backbone and identity LoRA; a workdir's newest
good checkpoint, or a checkpoint folder T/checkpoints/STEP) into a step LoRA that samples in
config.distill.steps steps without guidance (DMD2-style distribution matching; docs/method.md).
W/config.json then describes the student: `generate`, `story` and `evaluate` take W like any
run and sample it with its few-step, unguided settings (`--steps 4 --cfg 1`). Resumes from W's
newest good checkpoint, bit-identically; metrics go to W (TensorBoard, metrics.jsonl) and the
per-step generator loss to W/losses.jsonl. Every user error (a flag, a config value, a teacher
that is not a finished run, a workdir of another run) is one line on stderr, exit status 2.
"""
from __future__ import annotations

import sys

from absl import flags
from ml_collections import config_flags

from wildactor_jax import cli, fs
from wildactor_jax.train_lib import checkpoint as ckpt_lib, distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, logs)")


def parse_flags(argv):
  """`cli.parse_absl_flags` (a bad flag, override or config file: one line, exit status 2), and
  --config and --workdir required, in the same way."""
  rest = cli.parse_absl_flags(argv)
  for name in ("config", "workdir"):
    if flags.FLAGS[name].value is None:
      print(f"error: --{name} is required", file=sys.stderr, flush=True)
      sys.exit(2)
  return rest


def main(argv, make_train_source=None):
  """make_train_source(run config) -> iterator: another conditioning source (tests/faults.py)."""
  if len(argv) > 1:
    print(f"error: unexpected arguments: {argv[1:]}", file=sys.stderr, flush=True)
    cli.exit_now(2)
  distributed.maybe_initialize()
  from wildactor_jax.distill import run
  with distributed.fail_fast():
    try:
      run.distill_and_save(_CONFIG.value, _WORKDIR.value, make_train_source=make_train_source)
    except (ckpt_lib.RunError, fs.FsError, ValueError) as e:
      print(f"error: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}",
            file=sys.stderr, flush=True)
      cli.exit_now(2)


if __name__ == "__main__":
  cli.run_absl(main, flags_parser=parse_flags)
