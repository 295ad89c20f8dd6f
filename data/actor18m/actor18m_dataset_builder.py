"""TFDS builder for Actor-18M style manifests, written as ArrayRecord.

  tfds build data/actor18m --manual_dir MEDIA_ROOT --data_dir OUT --file_format array_record
  python -m data.build_actor18m --manifest MEDIA_ROOT/manifest.jsonl --out OUT  # same, + summary

MEDIA_ROOT holds `manifest.jsonl` (REFERENCE.md section 3) and the media it names; every path is
resolved inside it (a path escaping it is rejected). Each row is validated (`validate.py`); bad
rows are skipped, counted by reason and listed in a JSON-lines report, so one bad row never stops
a build. Splits are by `actor_id` (sha256 of the id; see `validate.split_by_actor`): no identity
is in both train and test.

A stored example keeps the original encoded bytes (mp4, png/jpeg) rather than decoded pixels:
decoding, resizing and VAE encoding happen once in `wildactor_jax.encode`, which reads these
records with `tfds.builder_from_directory(...)` and `features.deserialize_example_np`.
"""
from __future__ import annotations

import json
import os

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from . import validate

REPORT_NAME = "actor18m_build_report.jsonl"


class Builder(tfds.core.GeneratorBasedBuilder):
  """Actor-18M manifest -> {train, test} splits of raw clips and references."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Raw mp4/png bytes + REFERENCE.md schema metadata."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Point --manual_dir at the folder holding manifest.jsonl and the clips/refs it names.")

  def __init__(self, *, manifest: str | None = None, test_fraction: float = 0.1,
               report_path: str | None = None, **kwargs):
    super().__init__(**kwargs)
    self._manifest = manifest
    self._test_fraction = test_fraction
    self._report_path = report_path
    self.build_summary: dict | None = None  # set by _split_generators

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's own lookup reaches for the `importlib_resources` backport, which is not installed
    # here; the answer (this file, whose folder may hold checksums.tsv) is known anyway.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    text, raw = tfds.features.Text(), tfds.features.Tensor(shape=(), dtype=np.object_)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "key": text, "video": raw, "video_path": text, "num_frames": np.int32,
            "prompt": text, "actor_id": text, "source": text, "width": np.int32,
            "height": np.int32, "duration_sec": np.float32,
            "refs": tfds.features.Sequence({
                "image": tfds.features.Tensor(shape=(), dtype=np.object_), "path": text,
                "region": text, "view": text, "angle": np.float32, "visibility": np.float32,
                "source_frame": np.int32, "ref_source": text}),
        }),
        description=__doc__.split("\n\n")[0])

  def _split_generators(self, dl_manager):
    manifest = self._manifest or os.path.join(os.fspath(dl_manager.manual_dir), "manifest.jsonl")
    if not os.path.isfile(manifest):
      raise FileNotFoundError(f"{manifest}: manifest not found (expected a JSON-lines file)")
    rows, bad = validate.scan_manifest(manifest)
    report = self._report_path or os.path.join(os.fspath(self.data_dir_root), REPORT_NAME)
    validate.write_report(report, bad)
    self.build_summary = {"written": len(rows), "skipped": validate.count_reasons(bad),
                          "report": report}
    logging.info("actor18m validation: %s", json.dumps(self.build_summary))
    if not rows:
      raise ValueError(f"{manifest}: no valid rows; see {report}")
    splits = validate.split_by_actor(rows, self._test_fraction)
    return {name: self._generate_examples(split) for name, split in splits.items() if split}

  def _generate_examples(self, rows):
    for row in rows:
      data = row.data
      with open(row.video_path, "rb") as f:
        video = f.read()
      refs = []
      for ref, path in zip(data["refs"], row.ref_paths):
        with open(path, "rb") as f:
          image = f.read()
        refs.append({"image": image, "path": ref["path"], "region": ref["region"],
                     "view": ref["view"], "angle": float(ref["angle"]),
                     "visibility": float(ref.get("visibility", 1.0)),
                     "source_frame": int(ref.get("source_frame", -1)),
                     "ref_source": str(ref.get("metadata", {}).get("source", ""))})
      key = f"L{row.line:09d}"  # the manifest line: unique even when two rows share a clip
      yield key, {
          "key": key, "video": video, "video_path": data["video"], "num_frames": row.num_frames,
          "prompt": data["prompt"], "actor_id": data["actor_id"],
          "source": str(data.get("source", "")), "width": int(data.get("width", 0)),
          "height": int(data.get("height", 0)),
          "duration_sec": float(data.get("duration_sec", 0.0)), "refs": refs}
