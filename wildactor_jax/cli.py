"""The command-line contract shared by the generation CLIs: a user-facing problem (any
ValueError, e.g. GenerateError, MediaError, RunError, or a missing file) is one line on stderr
and exit status 2, with nothing written; success prints the result as one JSON line."""
from __future__ import annotations

import json
import os
import sys
from typing import Callable, NoReturn

from absl import logging

from wildactor_jax import fs


class GenerateError(ValueError):
  """A one-line, user-facing reason generation cannot proceed."""


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
  p.add_argument("--solver", choices=["euler", "unipc", "fewstep"])


def check_outputs(args) -> dict[str, str]:
  """The files this run will write, checked before any work: a .mp4 path, nothing of them an
  existing folder, and (locally) a folder that exists or can be made, and is writable."""
  if not args.out.endswith(".mp4"):
    raise GenerateError(f"--out {args.out}: expected a .mp4 path")
  stem = args.out[:-len(".mp4")]
  outputs = {"video": args.out, "contact_sheet": stem + ".png"}
  if args.gif:
    outputs["gif"] = stem + ".gif"
  if getattr(args, "save_latents", False):
    outputs["latents"] = stem + ".npy"
  for path in outputs.values():
    if fs.isdir(path):
      raise GenerateError(f"--out {args.out}: {path} is an existing folder; expected a file path")
  if not fs.is_remote(args.out):
    parent = os.path.dirname(os.fspath(fs.path(args.out)))
    while not os.path.exists(parent):
      parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
      raise GenerateError(f"--out {args.out}: cannot write there ({parent} is "
                          f"{'not writable' if os.path.isdir(parent) else 'a file'})")
  return outputs


def check_references(args, config) -> list[tuple[str, str, int]]:
  """[(flag, path, type)] in the order faces, bodies, three-view sheets; count limits."""
  from wildactor_jax.models.irope import BODY, FACE
  max_faces = int(config.data.get("max_faces", 5))
  max_bodies = int(config.data.get("max_bodies", 5))
  bodies = len(args.body) + len(args.three_view)
  if len(args.face) > max_faces or bodies > max_bodies:
    raise GenerateError(f"too many references: {len(args.face)} faces / {bodies} bodies "
                        f"(incl. three-view); this model takes at most {max_faces} / {max_bodies}")
  refs = ([("--face", f, FACE) for f in args.face] + [("--body", b, BODY) for b in args.body]
          + [("--three-view", s, BODY) for s in args.three_view])
  if not refs and config.sample.get("require_references", True):
    raise GenerateError("no references: pass --face/--body/--three-view (this config sets "
                        "sample.require_references; set it False for text-only generation)")
  return refs


def json_main(parse_args: Callable, run: Callable[..., dict], argv=None) -> int:
  quiet_closed_loop_noise()
  args = parse_args(argv)
  try:
    result = run(args)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result), flush=True)
  return 0


def quiet_closed_loop_noise() -> None:
  """A failed tensorstore/Orbax read (a damaged checkpoint being skipped) may later fire a
  callback into its closed asyncio loop; Python prints that as an "Exception ignored" traceback
  in the middle of the user's output. Such RuntimeErrors go to the debug log instead; every
  other unraisable exception is printed as before."""
  default = sys.unraisablehook

  def hook(unraisable):
    e = unraisable.exc_value
    if isinstance(e, RuntimeError) and "Event loop is closed" in str(e):
      logging.debug("ignored after a failed read: %r", e)
      return
    default(unraisable)

  sys.unraisablehook = hook


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
