"""The command-line contract shared by the CLIs: a user-facing problem (any ValueError, e.g.
GenerateError, MediaError, RunError, or a missing file; a bad flag or config override) is one
line on stderr and exit status 2, with nothing written; Ctrl-C is one line and exit status 130;
success of a generation CLI prints the result as one JSON line.

The argparse CLIs (generate, story, evaluate) run through `json_main`; the absl ones (train,
encode, params, bench, launch/aot_compile.py) through `run_absl`, whose flag parser turns a bad
`--config.a.b=v` override or a missing config file into one line naming the key (and the
closest key the config has)."""
from __future__ import annotations

import difflib
import json
import os
import sys
from typing import Callable, NoReturn

from absl import logging

from wildactor_jax import fs

INTERRUPTED = 130  # the shell's status for a process ended by SIGINT (128 + 2)


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


def parse_mesh(text: str, flag: str = "--mesh") -> list[int]:
  """"data,fsdp,context,tensor" -> 4 ints, each >= 1 or -1 (the remaining devices, once)."""
  try:
    shape = [int(v) for v in str(text).split(",")]
  except ValueError:
    shape = []
  if len(shape) != 4 or any(v == 0 or v < -1 for v in shape) or shape.count(-1) > 1:
    raise GenerateError(f"{flag} {text}: expected 4 comma-separated sizes data,fsdp,context,"
                        "tensor, each >= 1 or one of them -1 (the remaining devices)")
  return shape


def check_positive(flag: str, value) -> None:
  """An integer flag that must be >= 1 (argparse has already made it an int)."""
  if value is not None and value < 1:
    raise GenerateError(f"{flag} {value}: expected an integer >= 1")


def add_overwrite_argument(p) -> None:
  """--overwrite: the one way to let a CLI replace an output file that already exists."""
  p.add_argument("--overwrite", action="store_true",
                 help="replace output files that already exist (refused without it)")


def refuse_existing(flag: str, value: str, path: str, overwrite: bool) -> None:
  """Nothing of the user's is replaced unasked: PATH (written for FLAG VALUE) must not exist
  unless --overwrite was given."""
  if not overwrite and fs.exists(path):
    where = "" if path == value else f"{path} "
    raise GenerateError(f"{flag} {value}: {where}already exists; pass --overwrite to replace it")


def check_outputs(args) -> dict[str, str]:
  """The files this run will write, checked before any work: a .mp4 path, nothing of them an
  existing folder or (without --overwrite) an existing file, and (locally) a folder that exists
  or can be made, and is writable."""
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
    refuse_existing("--out", args.out, path, args.overwrite)
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
  args = parse_args(argv)
  try:
    result = run(args)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("error: interrupted", file=sys.stderr)
    return INTERRUPTED
  print(json.dumps(result), flush=True)
  return 0


def exit_now(code: int) -> NoReturn:
  """Ends the process at once, logs and output flushed, without Python's exit handlers.

  Used after a user-facing error or an interrupt has been reported: tensorstore and Orbax finish
  failed reads on background threads whose callbacks then find the asyncio loop closed, and
  print tracebacks at interpreter exit, after (and burying) the one-line error; and a SIGINT
  that lands while XLA compiles or Orbax restores leaves their threads running, which the
  interpreter's shutdown then crashes into (SIGSEGV). Nothing of the user's is left half
  written: outputs are written atomically, and checkpointers are closed on the error path."""
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def script_exit(code: int) -> NoReturn:
  """`sys.exit` for the CLIs' `__main__`: an error status exits at once (see `exit_now`)."""
  if code:
    exit_now(code)
  sys.exit(code)


def run_absl(main: Callable, flags_parser: Callable | None = None) -> None:
  """`absl.app.run(main)` under this module's contract: flags are parsed by `flags_parser`
  (default `parse_absl_flags`: one line, exit 2, for a bad flag, override or config file), and
  Ctrl-C is one line, exit 130."""
  from absl import app

  def guarded(argv):
    try:
      return main(argv)
    except KeyboardInterrupt:
      print("error: interrupted", file=sys.stderr)
      exit_now(INTERRUPTED)

  app.run(guarded, flags_parser=flags_parser or parse_absl_flags)


def parse_absl_flags(argv: list[str], values=None) -> list[str]:
  """absl's flag parsing (of `values`, default absl's FLAGS), with every problem as one line
  and exit status 2 (absl prints a traceback for an unknown config key, and reads a config
  file only when it is first used: a missing one would fail mid-run)."""
  from absl import flags
  from ml_collections.config_flags import config_flags  # is_config_flag is not re-exported
  values = flags.FLAGS if values is None else values
  try:
    rest = values(argv)
    for name in list(values):
      flag = values[name]
      if config_flags.is_config_flag(flag) and flag.value is not None:
        flag.value.keys()  # a config that failed to load raises here
  except SystemExit:  # --help
    raise
  except Exception as e:  # absl, ml_collections and the config's own code raise assorted types
    line = _config_problem(values, argv) or _last_line(e)
    print(f"error: {line}", file=sys.stderr, flush=True)
    sys.exit(2)
  return rest


def _last_line(error: BaseException) -> str:
  lines = [l.strip() for l in str(error).strip().splitlines() if l.strip()]
  return (lines[0] if lines and lines[0].startswith("flag --") else
          lines[-1] if lines else type(error).__name__)


def _config_problem(values, argv: list[str]) -> str | None:
  """What is wrong with a config flag on this command line: its file missing or failing to
  load, or an override naming no field (with the closest field); None if nothing is."""
  from ml_collections.config_flags import config_flags
  from wildactor_jax.config_lib import load_config_file
  for name in list(values):
    flag = values[name]
    if not config_flags.is_config_flag(flag):
      continue
    spec = _flag_argument(argv, name)
    if spec is None:
      continue
    path = spec.split(":", 1)[0]
    if not os.path.isfile(path):
      return f"--{name} {spec}: no such config file {path}"
    try:
      config = load_config_file(spec)
    except Exception as e:  # the config's own code
      return f"--{name} {spec}: the config failed to load ({type(e).__name__}: {_last_line(e)})"
    for key in _overrides(argv, name):
      problem = unknown_config_key(config, key)
      if problem:
        return f"--{name}.{key}: {spec} {problem}"
  return None


def unknown_config_key(config, key: str) -> str | None:
  """None if `key` ("train.steps") names a field of `config`, else why not, with the closest
  field there is ("has no field train.stpes (closest: train.steps)")."""
  node, done = config, []
  for part in key.split("."):
    fields = list(node.keys()) if hasattr(node, "keys") else []
    if part not in fields:
      where = ".".join(done + [part])
      if not fields:
        return f"has no field {where} ({'.'.join(done)} is a value, not a section)"
      close = difflib.get_close_matches(part, fields, n=1, cutoff=0.5)
      hint = (f"closest: {'.'.join(done + close)}" if close else
              f"{'.'.join(done) or 'the config'} has {', '.join(sorted(fields)[:12])}")
      return f"has no field {where} ({hint})"
    node = node[part]
    done.append(part)
  return None


def _flag_argument(argv: list[str], name: str) -> str | None:
  for i, arg in enumerate(argv):
    if arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
      return argv[i + 1]
    for prefix in (f"--{name}=", f"-{name}="):
      if arg.startswith(prefix):
        return arg[len(prefix):]
  return None


def _overrides(argv: list[str], name: str) -> list[str]:
  """The field paths of --NAME.a.b=v / --NAME.a.b v / --[no]NAME.a.b arguments."""
  keys = []
  for arg in argv:
    for prefix in (f"--{name}.", f"--no{name}.", f"-{name}."):
      if arg.startswith(prefix):
        keys.append(arg[len(prefix):].split("=", 1)[0])
  return keys
