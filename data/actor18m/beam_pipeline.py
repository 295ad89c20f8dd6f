"""The Actor-18M build on Apache Beam: the same validation, splits and bad-row report as the
single-process build, with the work spread over Beam workers (DirectRunner, Dataflow, Flink).

Pipeline (built once, shared by both splits):
  manifest lines -> reshuffle -> parse and schema check -> group by row digest (the earliest
  line is kept, the others are `duplicate`) -> held-out identities over the kept rows (a side
  input) -> per split: media check (decode every clip and image) -> (key, example).
Bad rows of each stage are written as JSON lines into `staging`; the builder merges them into
the report after the pipeline has run.
"""
from __future__ import annotations

import json

import apache_beam as beam

from . import validate

BAD = "bad"


def _parse(line_and_text):
  line, text = line_and_text
  try:
    yield line, validate.parse_row(text)
  except validate.RowError as e:
    yield beam.pvalue.TaggedOutput(BAD, validate.bad_row(line, e))


def _earliest_of_each(digest_and_rows):
  _, rows = digest_and_rows
  rows = sorted(rows, key=lambda row: row[0])
  yield rows[0]
  for line, _ in rows[1:]:
    yield beam.pvalue.TaggedOutput(BAD, validate.bad_row(line, validate.duplicate_error(rows[0][0])))


def _check_media(line_and_row, root: str):
  line, data = line_and_row
  try:
    yield validate.check_media(data, root, line)
  except validate.RowError as e:
    yield beam.pvalue.TaggedOutput(BAD, validate.bad_row(line, e))


def _write_bad(bad, label: str, prefix: str):
  return (bad | f"{label}Json" >> beam.Map(json.dumps)
          | f"{label}Write" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl"))


class SharedRows:
  """The split-independent stages: built on the first split's pipeline, reused by the others."""

  def __init__(self, manifest: str, test_fraction: float, staging: str):
    self.manifest, self.test_fraction, self.staging = manifest, test_fraction, staging
    self._built: dict[int, tuple] = {}

  def rows_and_held_out(self, pipeline):
    """(PCollection of (line, row) kept after parsing and de-duplication, singleton PCollection
    of the held-out actor ids)."""
    if id(pipeline) not in self._built:
      self._built[id(pipeline)] = self._build(pipeline)
    return self._built[id(pipeline)]

  def _build(self, pipeline):
    parsed = (pipeline | "Manifest" >> beam.Create([self.manifest])
              | "Lines" >> beam.FlatMap(validate.manifest_lines)
              | "Spread" >> beam.Reshuffle()
              | "Parse" >> beam.FlatMap(_parse).with_outputs(BAD, main="rows"))
    unique = (parsed.rows
              | "ByDigest" >> beam.Map(lambda row: (validate.row_digest(row[1]), row))
              | "GroupByDigest" >> beam.GroupByKey()
              | "Earliest" >> beam.FlatMap(_earliest_of_each).with_outputs(BAD, main="rows"))
    fraction = self.test_fraction
    held_out = (unique.rows | "Actors" >> beam.Map(lambda row: row[1]["actor_id"])
                | "DistinctActors" >> beam.Distinct()
                | "AllActors" >> beam.combiners.ToList()
                | "HeldOut" >> beam.Map(lambda ids: sorted(validate.held_out_actors(ids, fraction))))
    bad = (parsed[BAD], unique[BAD]) | "RowErrors" >> beam.Flatten()
    _write_bad(bad, "RowErrors", f"{self.staging}/rows")
    return unique.rows, held_out


class SplitExamples(beam.PTransform):
  """One split's (key, example) pairs; its media failures go to `staging`."""

  def __init__(self, shared: SharedRows, split: str, root: str, to_example):
    super().__init__()
    self.shared, self.split, self.root, self.to_example = shared, split, root, to_example

  def expand(self, pbegin):
    rows, held_out = self.shared.rows_and_held_out(pbegin.pipeline)
    want_test = self.split == "test"
    checked = (rows
               | "InSplit" >> beam.Filter(lambda row, test: (row[1]["actor_id"] in test) == want_test,
                                          test=beam.pvalue.AsSingleton(held_out))
               | "CheckMedia" >> beam.FlatMap(_check_media, self.root).with_outputs(BAD, main="ok"))
    _write_bad(checked[BAD], "MediaErrors", f"{self.shared.staging}/{self.split}")
    return checked.ok | "Example" >> beam.Map(self.to_example)
