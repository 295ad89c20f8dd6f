"""python -m wildactor_jax.convert --src SRC --out OUT [--kind transformer|vae|text_encoder]
[--dtype bfloat16|float32]

Converts weights the user has (safetensors; diffusers or original Wan layouts) into our Orbax
checkpoint format. Errors are one line on stderr with exit status 2, and nothing is written.
OUT must be new, empty, or an earlier converted checkpoint (replaced by rename once the new one
is complete); an existing file or a folder holding anything else is refused.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from wildactor_jax import fs
from wildactor_jax.models.checkpoint_io import CheckpointError, check_output

KINDS = {
    "transformer": "wildactor_jax.convert.transformer",
    "vae": "wildactor_jax.convert.vae",
    "text_encoder": "wildactor_jax.convert.text_encoder",
}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m wildactor_jax.convert", description=__doc__)
  parser.add_argument("--src", required=True, help="weights folder or .safetensors file")
  parser.add_argument("--out", required=True, help="output checkpoint folder")
  parser.add_argument("--kind", default="transformer", choices=sorted(KINDS))
  parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  args = parser.parse_args(argv)
  start = time.time()
  try:
    check_output(args.out)  # before any work: a file or a user's folder is never written over
    module = importlib.import_module(KINDS[args.kind])
    info = module.convert(args.src, args.out, args.dtype)
  except (CheckpointError, fs.FsError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(dict(info or {}, kind=args.kind, out=args.out, dtype=args.dtype,
                        seconds=round(time.time() - start, 2))))
  return 0


if __name__ == "__main__":
  sys.exit(main())
