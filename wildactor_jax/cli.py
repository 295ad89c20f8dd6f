"""The command-line contract shared by the generation CLIs: a user-facing problem (any
ValueError, e.g. GenerateError, MediaError, RunError, or a missing file) is one line on stderr
and exit status 2, with nothing written; success prints the result as one JSON line."""
from __future__ import annotations

import json
import os
import sys
from typing import Callable, NoReturn

from absl import logging


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


def exit_now(code: int) -> NoReturn:
  """Ends the process at once, logs and output flushed, without Python's exit handlers.

  Used after a user-facing error has been printed: tensorstore and Orbax finish failed reads on
  background threads whose callbacks then find the asyncio loop closed, and print tracebacks
  at interpreter exit, after (and burying) the one-line error. Nothing is in flight by then
  (checkpointers are closed on the error path) and nothing was written."""
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def script_exit(code: int) -> NoReturn:
  """`sys.exit` for the CLIs' `__main__`: an error status exits at once (see `exit_now`)."""
  if code:
    exit_now(code)
  sys.exit(code)
