"""The command-line contract shared by the generation CLIs: a user-facing problem (any
ValueError, e.g. GenerateError, MediaError, RunError, or a missing file) is one line on stderr
and exit status 2, with nothing written; success prints the result as one JSON line."""
from __future__ import annotations

import json
import sys
from typing import Callable


def json_main(parse_args: Callable, run: Callable[..., dict], argv=None) -> int:
  args = parse_args(argv)
  try:
    result = run(args)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result), flush=True)
  return 0
