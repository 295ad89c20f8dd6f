"""Actor-18M TFDS build: planted bad rows are skipped exactly and reported; splits by identity;
the single-process build and `tfds build` (with and without Beam) give the same rows and report."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from data import synthetic_actors

REPO = pathlib.Path(__file__).resolve().parents[1]

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def good_row(media: pathlib.Path) -> dict:
  return json.loads((media / "manifest.jsonl").read_text().splitlines()[0])


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> pathlib.Path:
  """5 actors x 2 clips plus one planted bad row per reason (lines 11..18)."""
  root = tmp_path_factory.mktemp("a18m") / "media"
  synthetic_actors.generate(str(root), 5, 2, seed=3, size=32, frames=5, workers=1)
  base = good_row(root)
  (root / "refs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
  (root / "clips" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 garbage")
  (root.parent / "outside.png").write_bytes((root / base["refs"][0]["path"]).read_bytes())
  def with_ref(path):
    return dict(base, refs=[dict(base["refs"][0], path=path)])
  planted = [
      json.dumps(dict(base, video="clips/missing.mp4")),            # missing_file
      json.dumps(with_ref("refs/broken.png")),                       # undecodable_image
      json.dumps(with_ref("../outside.png")),                        # path_escapes_root
      json.dumps(dict(base, refs=[])),                               # no_references
      '{"video": "clips/a0000_c00.mp4", "prompt": "unterminated',    # malformed_json
      json.dumps(dict(base, video="clips/broken.mp4")),              # undecodable_video
      json.dumps(dict(base, refs=[dict(base["refs"][0], view="sideways")])),  # schema
      json.dumps(dict(reversed(list(base.items())))),               # duplicate (of line 1)
  ]
  with open(root / "manifest.jsonl", "a") as f:
    f.write("\n".join(planted) + "\n")
  return root


@pytest.fixture(scope="module")
def reference_build(media, tmp_path_factory) -> pathlib.Path:
  """The single-process build (data.build_actor18m) of `media`."""
  out = tmp_path_factory.mktemp("reference")
  subprocess.run([sys.executable, "-m", "data.build_actor18m", "--manifest",
                  str(media / "manifest.jsonl"), "--out", str(out)],
                 check=True, capture_output=True, timeout=180, env=ENV, cwd=REPO)
  return out


EXPECTED = {"missing_file": 11, "undecodable_image": 12, "path_escapes_root": 13,
            "no_references": 14, "malformed_json": 15, "undecodable_video": 16, "schema": 17,
            "duplicate": 18}


def read_split(data_dir: pathlib.Path, split: str) -> list[dict]:
  import tensorflow_datasets as tfds
  from array_record.python import array_record_module
  builder = tfds.builder_from_directory(str(data_dir / "actor18m" / "1.0.0"))
  out = []
  for path in builder.info.splits[split].filepaths:
    reader = array_record_module.ArrayRecordReader(str(path))
    out += [builder.info.features.deserialize_example_np(r)
            for r in reader.read(list(range(reader.num_records())))]
    reader.close()
  return out


def test_build_skips_exactly_the_planted_rows(media, tmp_path):
  out = tmp_path / "tfds"
  proc = subprocess.run([sys.executable, "-m", "data.build_actor18m", "--manifest",
                         str(media / "manifest.jsonl"), "--out", str(out), "--num-shards", "2"],
                        capture_output=True, text=True, timeout=180, env=ENV, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-2000:]
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert set(summary) == {"written", "skipped", "report"}
  assert summary["written"] == 10
  assert summary["skipped"] == {reason: 1 for reason in EXPECTED}
  report = [json.loads(line) for line in pathlib.Path(summary["report"]).read_text().splitlines()]
  assert {r["reason"]: r["line"] for r in report} == EXPECTED
  assert all(r["detail"] for r in report)
  assert [r["detail"] for r in report if r["reason"] == "duplicate"] == ["the same row as line 1"]
  assert [r["line"] for r in report] == sorted(EXPECTED.values())   # in manifest order

  train, test = read_split(out, "train"), read_split(out, "test")
  assert len(train) + len(test) == 10 and test
  train_actors = {e["actor_id"] for e in train}
  test_actors = {e["actor_id"] for e in test}
  assert not train_actors & test_actors                       # no identity in both splits
  assert len(train_actors | test_actors) == 5
  example = train[0]
  assert example["video"][4:8] == b"ftyp" and example["num_frames"] == 5
  assert len(example["refs"]["image"]) == len(example["refs"]["region"]) > 0
  assert example["refs"]["image"][0][:4] == b"\x89PNG"


@pytest.mark.parametrize("beam", [False, True], ids=["one_process", "beam_fnapi_runner"])
def test_tfds_build_cli_gives_the_same_rows_and_report(media, reference_build, tmp_path, beam):
  """TFDS's own CLI (`tfds build`), in one process and on Beam: the rows, their splits and the
  bad-row report equal the single-process build's."""
  reference = reference_build
  out = tmp_path / "tfds_cli"
  # FnApiRunner is the in-process runner that DirectRunner falls back to; DirectRunner itself
  # first tries to download the Prism runner binary, and tests download nothing.
  extra = ["--beam_pipeline_options=runner=FnApiRunner"] if beam else []
  proc = subprocess.run([sys.executable, "-m", "tensorflow_datasets.scripts.cli.main", "build",
                         "data/actor18m", "--manual_dir", str(media), "--data_dir", str(out),
                         "--file_format", "array_record", *extra],
                        capture_output=True, text=True, timeout=300, cwd=REPO, env=ENV)
  assert proc.returncode == 0, proc.stderr[-3000:]
  if beam:  # the examples went through Beam, and no runner binary was fetched
    log = proc.stdout + proc.stderr
    assert "BeamWriter" in log and "PrismRunner" not in log
  for split in ("train", "test"):
    got = {e["key"]: (e["actor_id"], e["video"]) for e in read_split(out, split)}
    want = {e["key"]: (e["actor_id"], e["video"]) for e in read_split(reference, split)}
    assert got == want, split
  name = "actor18m_build_report.jsonl"
  assert (out / name).read_text() == (reference / name).read_text()
  assert len((out / name).read_text().splitlines()) == len(EXPECTED)
  assert not [p for p in out.iterdir() if "staging" in p.name]          # none left behind


def test_bad_arguments_fail_with_one_line(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "data.build_actor18m", "--manifest",
                         str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")],
                        capture_output=True, text=True, timeout=60, env=ENV, cwd=REPO)
  assert proc.returncode == 2
  assert proc.stderr.strip().count("\n") == 0 and "nope.jsonl" in proc.stderr
  assert not (tmp_path / "o").exists()


def test_the_same_clip_spelled_two_ways_is_one_row(tmp_path):
  """./clips/x.mp4 and clips/../clips/x.mp4 (and ./refs/.. for a reference) are one file:
  the second row is a duplicate, not a second copy of the clip in the dataset."""
  from data.actor18m import validate
  ref = {"path": "refs/a/face_y0.png", "region": "face", "view": "front", "angle": 0.0}
  row = {"video": "clips/x.mp4", "prompt": "a person waves", "actor_id": "a", "refs": [ref]}
  spellings = [dict(row, video="./clips/x.mp4"),
               dict(row, video="clips/../clips/x.mp4"),
               dict(row, video="clips//x.mp4", refs=[dict(ref, path="./refs/a/../a/face_y0.png")]),
               dict(row, video="clips/y.mp4")]                       # another clip: kept
  manifest = tmp_path / "manifest.jsonl"
  manifest.write_text("".join(json.dumps(r) + "\n" for r in spellings))
  rows, bad = validate.read_manifest(str(manifest))
  assert [line for line, _ in rows] == [1, 4]
  assert [(b["line"], b["reason"], b["detail"]) for b in bad] == [
      (2, "duplicate", "the same row as line 1"), (3, "duplicate", "the same row as line 1")]
