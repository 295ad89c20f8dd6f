"""TFDS builder for Actor-18M style manifests, written as ArrayRecord, in one process or on Beam.

  tfds build data/actor18m --manual_dir MEDIA_ROOT --data_dir OUT --file_format array_record
  tfds build data/actor18m --manual_dir MEDIA_ROOT --data_dir OUT --file_format array_record \
      --beam_pipeline_options="runner=DirectRunner"           # or FnApiRunner, Dataflow, Flink
  python -m data.build_actor18m --manifest MEDIA_ROOT/manifest.jsonl --out OUT  # one process + summary

MEDIA_ROOT holds `manifest.jsonl` (docs/method.md s.3: video, prompt, actor_id, refs with
region/view/angle) and the media it names; every path is resolved inside it (a path
escaping it is rejected). Each row is validated (`validate.py`); bad rows are skipped, counted by
reason and listed in a JSON-lines report, so one bad row never stops a build. Splits are by
`actor_id` (sha256 of the id; see `validate.held_out_actors`, decided over the schema-valid,
de-duplicated rows): no identity is in both train and test.

Beam mode (any --beam_pipeline_options or --beam_runner) gives the same rows, splits and report
(Beam's DirectRunner first tries its Prism runner, a binary it downloads; `runner=FnApiRunner`
is the in-process Python runner it otherwise falls back to, with no download):
the workers read the manifest, parse it, drop duplicates (grouped by row digest, the earliest
line kept), decode every clip and image and write the examples; each split writes the bad rows it
found into a staging folder beside the report, and the driver merges them into the report once
the pipeline has finished. On a remote runner the workers need this package and `wildactor_jax`
installed (e.g. a `setup_file` or `requirements_file` pipeline option), and MEDIA_ROOT must be a
path that the workers can read.

A stored example keeps the original encoded bytes (mp4, png/jpeg) rather than decoded pixels:
decoding, resizing and VAE encoding happen once in `wildactor_jax.encode`, which reads these
records with `tfds.builder_from_directory(...)` and `features.deserialize_example_np`.
"""
from __future__ import annotations

import json
import os
import uuid

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from wildactor_jax import fs
from wildactor_jax.input.splits import SPLITS

from . import validate

REPORT_NAME = "actor18m_build_report.jsonl"


def example(row: validate.Row) -> tuple[str, dict]:
  """(key, example) of a validated row; the key is the manifest line, unique even when two rows
  share a clip."""
  data = row.data
  refs = []
  for ref, path in zip(data["refs"], row.ref_paths):
    with open(path, "rb") as f:
      image = f.read()
    refs.append({"image": image, "path": ref["path"], "region": ref["region"],
                 "view": ref["view"], "angle": float(ref["angle"]),
                 "visibility": float(ref.get("visibility", 1.0)),
                 "source_frame": int(ref.get("source_frame", -1)),
                 "ref_source": str(ref.get("metadata", {}).get("source", ""))})
  with open(row.video_path, "rb") as f:
    video = f.read()
  key = f"L{row.line:09d}"
  return key, {
      "key": key, "video": video, "video_path": data["video"], "num_frames": row.num_frames,
      "prompt": data["prompt"], "actor_id": data["actor_id"],
      "source": str(data.get("source", "")), "width": int(data.get("width", 0)),
      "height": int(data.get("height", 0)),
      "duration_sec": float(data.get("duration_sec", 0.0)), "refs": refs}


class Builder(tfds.core.GeneratorBasedBuilder):
  """Actor-18M manifest -> {train, test} splits of raw clips and references."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Raw mp4/png bytes + the Actor-18M row metadata."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Point --manual_dir at the folder holding manifest.jsonl and the clips/refs it names.")

  def __init__(self, *, manifest: str | None = None, test_fraction: float = 0.1,
               report_path: str | None = None, **kwargs):
    super().__init__(**kwargs)
    self._manifest = manifest
    self._test_fraction = test_fraction
    self._report_path = report_path
    self._beam = False
    self.build_summary: dict | None = None  # {"written", "skipped", "report"} after a build

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

  def _download_and_prepare(self, dl_manager, download_config):
    # Beam when the user asks for it, as `tfds build --beam_pipeline_options` does.
    self._beam = bool(download_config.beam_options or download_config.beam_runner)
    if not self._beam:
      super()._download_and_prepare(dl_manager, download_config)
      return
    try:
      super()._download_and_prepare(dl_manager, download_config)
      # The pipeline has run: merge the workers' bad rows into the report.
      bad = [json.loads(line) for part in fs.glob(fs.join(self._staging, "*.jsonl"))
             for line in fs.read_text(part).splitlines() if line]
      self._finish_report(bad, written=sum(s.num_examples for s in self.info.splits.values()))
    finally:
      if fs.exists(self._staging):  # our own staging files, nothing of the user's
        fs.path(self._staging).rmtree()

  def _finish_report(self, bad: list[dict], written: int) -> None:
    validate.write_report(self._report, bad)
    self.build_summary = {"written": written, "skipped": validate.count_reasons(bad),
                          "report": self._report}
    logging.info("actor18m validation: %s", json.dumps(self.build_summary))

  def _split_generators(self, dl_manager):
    manifest = self._manifest or os.path.join(os.fspath(dl_manager.manual_dir), "manifest.jsonl")
    if not os.path.isfile(manifest):
      raise FileNotFoundError(f"{manifest}: manifest not found (expected a JSON-lines file)")
    self._root = os.path.dirname(os.path.abspath(manifest))
    self._report = self._report_path or os.path.join(os.fspath(self.data_dir_root), REPORT_NAME)
    if self._beam:
      from . import beam_pipeline  # apache_beam is needed in this mode only
      self._staging = f"{self._report}.staging-{uuid.uuid4().hex[:8]}"
      shared = beam_pipeline.SharedRows(manifest, self._test_fraction, self._staging)
      splits = SPLITS if self._test_fraction > 0 else ("train",)
      return {split: beam_pipeline.SplitExamples(shared, split, self._root, example)
              for split in splits}
    candidates, bad = validate.read_manifest(manifest)
    test = validate.held_out_actors((d["actor_id"] for _, d in candidates), self._test_fraction)
    rows = []
    for line, data in candidates:
      try:
        rows.append(validate.check_media(data, self._root, line))
      except validate.RowError as e:
        bad.append(validate.bad_row(line, e))
    self._finish_report(bad, written=len(rows))
    if not rows:
      raise ValueError(f"{manifest}: no valid rows; see {self._report}")
    splits = validate.split_by_actor(rows, test)
    return {name: self._generate_examples(split) for name, split in splits.items() if split}

  def _generate_examples(self, rows):
    for row in rows:
      yield example(row)
