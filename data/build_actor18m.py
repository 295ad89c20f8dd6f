"""Build the Actor-18M TFDS dataset (ArrayRecord) from a manifest; wraps data/actor18m/.

  python -m data.build_actor18m --manifest DIR/manifest.jsonl --out OUT \
      [--test-fraction 0.1] [--num-shards N] [--report PATH]

Run from the repository root (`data` is a package). Media paths in the manifest resolve inside the manifest's folder. Bad rows are skipped and
reported (see data/actor18m/validate.py). Bad arguments exit with status 2 and one line. The
last stdout line is one JSON object:
  {"written": N, "skipped": {"<reason>": count, ...}, "report": "<path>"}
Output: OUT/actor18m/1.0.0/actor18m-{train,test}.array_record-NNNNN-of-MMMMM plus TFDS metadata
(TFDS writes into a temp folder and renames it when complete). This is the single-process build;
at scale, `tfds build data/actor18m --beam_pipeline_options=...` gives the same rows and report
on Beam workers (data/actor18m/actor18m_dataset_builder.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build(manifest: str, out: str, test_fraction: float = 0.1, num_shards: int | None = None,
          report: str | None = None) -> dict:
  import tensorflow_datasets as tfds
  from data.actor18m import actor18m_dataset_builder as adb

  report = report or os.path.join(out, adb.REPORT_NAME)
  builder = adb.Builder(manifest=manifest, test_fraction=test_fraction, report_path=report,
                        data_dir=out, file_format="array_record")
  if (builder.data_path / "dataset_info.json").exists():
    raise FileExistsError(f"{builder.data_path}: already built; remove it or choose another --out")
  tfds.disable_progress_bar()
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.path.dirname(os.path.abspath(manifest)),
      compute_stats=tfds.download.ComputeStatsMode.SKIP, num_shards=num_shards))
  summary = dict(builder.build_summary)
  written = sum(split.num_examples for split in builder.info.splits.values())
  if written != summary["written"]:
    raise RuntimeError(f"wrote {written} examples but validated {summary['written']}")
  splits = {name: split.num_examples for name, split in builder.info.splits.items()}
  print(f"splits: {json.dumps(splits)} in {builder.data_dir}", file=sys.stderr)
  return summary


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--manifest", required=True,
                      help="JSON-lines manifest (the public Actor-18M row format)")
  parser.add_argument("--out", required=True, help="TFDS data_dir to write")
  parser.add_argument("--test-fraction", type=float, default=0.1,
                      help="fraction of identities (by actor_id hash) in the test split")
  parser.add_argument("--num-shards", type=int, default=None,
                      help="ArrayRecord files per split (default: TFDS picks by size)")
  parser.add_argument("--report", default=None, help="bad-row report path (JSON lines)")
  args = parser.parse_args(argv)
  if not os.path.isfile(args.manifest):
    print(f"error: --manifest {args.manifest}: file not found (expected manifest.jsonl)",
          file=sys.stderr)
    return 2
  if not 0.0 <= args.test_fraction < 1.0:
    print(f"error: --test-fraction {args.test_fraction}: expected a value in [0, 1)",
          file=sys.stderr)
    return 2
  try:
    summary = build(args.manifest, args.out, args.test_fraction, args.num_shards, args.report)
  except (FileExistsError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(summary), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
