"""The command-line contract shared by the generation CLIs: a user-facing problem (any
ValueError, e.g. GenerateError, MediaError, RunError, or a missing file) is one line on stderr
and exit status 2, with nothing written; success prints the result as one JSON line."""
from __future__ import annotations

import json
import sys
from typing import Callable


def add_run_arguments(p) -> None:
  """The trained run to sample from (--workdir | --checkpoint, --config), shared by the CLIs."""
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--workdir", help="training workdir: its newest checkpoint is used")
  src.add_argument("--checkpoint", help="one checkpoint step folder (W/checkpoints/STEP)")
  p.add_argument("--config", help="experiment config (default: the one saved in the workdir)")


def add_sampling_arguments(p) -> None:
  """Overrides of the config's clip geometry and sampler (default: the config's)."""
  p.add_argument("--height", type=int)
  p.add_argument("--width", type=int)
  p.add_argument("--steps", type=int)
  p.add_argument("--cfg", type=float)
  p.add_argument("--shift", type=float)
  p.add_argument("--solver", choices=["euler", "unipc"])


def json_main(parse_args: Callable, run: Callable[..., dict], argv=None) -> int:
  args = parse_args(argv)
  try:
    result = run(args)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result), flush=True)
  return 0
