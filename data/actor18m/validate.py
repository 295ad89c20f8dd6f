"""Row validation and identity-disjoint splitting for the Actor-18M manifest (no TensorFlow).

A row is kept only if all of these hold, checked in this order; the first failure is its reason:
  malformed_json     the line is not a JSON object
  schema             a field is missing or has the wrong type / value (docs/method.md s.3)
  no_references      "refs" is an empty list
  duplicate          the same row as an earlier line (same JSON object, key order ignored, media
                     paths compared normalised); the earliest line is the one checked further
                     and kept
  path_escapes_root  a media path is absolute or resolves (symlinks included) outside the root
  missing_file       a media file does not exist
  undecodable_video  the clip does not decode to at least one frame
  undecodable_image  a reference image does not decode
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import posixpath
from typing import Any, Iterable, Iterator

from wildactor_jax import fs
# The split rule is the package's (evaluation uses it too); re-exported for the builders.
from wildactor_jax.input.splits import actor_hash, held_out_actors  # noqa: F401

REASONS = ("malformed_json", "schema", "no_references", "duplicate", "path_escapes_root",
           "missing_file", "undecodable_video", "undecodable_image")
REGIONS = ("face", "body", "three_view")
VIEWS = ("front", "left", "right", "side", "back", "up", "down", "canonical")


class RowError(Exception):
  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason, self.detail = reason, detail


@dataclasses.dataclass
class Row:
  line: int                   # 1-based line number in the manifest
  data: dict[str, Any]        # the parsed row
  video_path: str             # resolved absolute paths inside the media root
  ref_paths: list[str]
  num_frames: int


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_schema(row: Any) -> None:
  if not isinstance(row, dict):
    raise RowError("malformed_json", f"expected a JSON object, got {type(row).__name__}")
  for name in ("video", "prompt", "actor_id"):
    if not isinstance(row.get(name), str) or not row[name]:
      raise RowError("schema", f"field {name!r}: expected a non-empty string")
  for name, ok in (("source", lambda v: isinstance(v, str)),
                   ("width", lambda v: isinstance(v, int) and v > 0),
                   ("height", lambda v: isinstance(v, int) and v > 0),
                   ("duration_sec", lambda v: _number(v) and v >= 0)):
    if name in row and not ok(row[name]):
      raise RowError("schema", f"field {name!r}: bad value {row[name]!r}")
  refs = row.get("refs")
  if not isinstance(refs, list):
    raise RowError("schema", "field 'refs': expected a list")
  if not refs:
    raise RowError("no_references", "field 'refs' is empty")
  for i, ref in enumerate(refs):
    where = f"refs[{i}]"
    if not isinstance(ref, dict):
      raise RowError("schema", f"{where}: expected an object")
    if not isinstance(ref.get("path"), str) or not ref["path"]:
      raise RowError("schema", f"{where}.path: expected a non-empty string")
    if ref.get("region") not in REGIONS:
      raise RowError("schema", f"{where}.region: expected one of {REGIONS}, got {ref.get('region')!r}")
    if ref.get("view") not in VIEWS:
      raise RowError("schema", f"{where}.view: expected one of {VIEWS}, got {ref.get('view')!r}")
    if not _number(ref.get("angle")):
      raise RowError("schema", f"{where}.angle: expected a finite number (degrees)")
    if "visibility" in ref and not _number(ref["visibility"]):
      raise RowError("schema", f"{where}.visibility: expected a number")
    if "source_frame" in ref and not (isinstance(ref["source_frame"], int)
                                      and not isinstance(ref["source_frame"], bool)):
      raise RowError("schema", f"{where}.source_frame: expected an integer")
    if "metadata" in ref and not isinstance(ref["metadata"], dict):
      raise RowError("schema", f"{where}.metadata: expected an object")


def resolve_inside(root: str, path: str) -> str:
  """Absolute path of `path` under `root`; RowError if it is absolute or escapes the root."""
  if os.path.isabs(path):
    raise RowError("path_escapes_root", f"{path!r} is absolute; expected a path under the root")
  real_root = os.path.realpath(root)
  full = os.path.realpath(os.path.join(real_root, path))
  if os.path.commonpath([real_root, full]) != real_root:
    raise RowError("path_escapes_root", f"{path!r} resolves outside the media root")
  return full


def count_video_frames(path: str) -> int:
  """Decodes the whole clip (a truncated tail fails here, not in the encode job)."""
  import imageio_ffmpeg
  reader = imageio_ffmpeg.read_frames(path)
  try:
    next(reader)  # metadata
    return sum(1 for _ in reader)
  finally:
    reader.close()


def check_image(path: str) -> None:
  from PIL import Image
  with Image.open(path) as img:
    img.load()


def parse_row(text: str) -> dict[str, Any]:
  """One manifest line as a schema-valid row; RowError (malformed_json, schema, no_references)."""
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise RowError("malformed_json", str(e))
  check_schema(data)
  return data


def row_digest(data: dict[str, Any]) -> str:
  """Identifies a row by content (key order ignored, media paths normalised: ./clips/x.mp4 and
  clips/../clips/x.mp4 are one file): two lines with one digest are duplicates."""
  norm = lambda p: posixpath.normpath(p) if isinstance(p, str) and p else p
  data = dict(data, video=norm(data.get("video")))
  if isinstance(data.get("refs"), list):
    data["refs"] = [dict(r, path=norm(r.get("path"))) if isinstance(r, dict) else r
                    for r in data["refs"]]
  return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def duplicate_error(first_line: int) -> RowError:
  return RowError("duplicate", f"the same row as line {first_line}")


def check_media(data: dict[str, Any], root: str, line: int) -> Row:
  """The row's media resolved inside `root`, present and decodable; RowError otherwise."""
  video = resolve_inside(root, data["video"])
  refs = [resolve_inside(root, r["path"]) for r in data["refs"]]
  for path, shown in [(video, data["video"])] + [(p, r["path"]) for p, r in zip(refs, data["refs"])]:
    if not os.path.isfile(path):
      raise RowError("missing_file", f"{shown} does not exist")
  try:
    frames = count_video_frames(video)
  except Exception as e:  # ffmpeg raises assorted errors on corrupt input
    raise RowError("undecodable_video", f"{data['video']}: {str(e).splitlines()[0] if str(e) else e!r}")
  if frames < 1:
    raise RowError("undecodable_video", f"{data['video']}: no frames")
  for path, ref in zip(refs, data["refs"]):
    try:
      check_image(path)
    except Exception as e:  # PIL raises several types on corrupt input
      raise RowError("undecodable_image", f"{ref['path']}: {e}")
  return Row(line, data, video, refs, frames)


def bad_row(line: int, error: RowError) -> dict:
  """A bad-row report record."""
  return {"line": line, "reason": error.reason, "detail": error.detail}


def manifest_lines(manifest: str) -> Iterator[tuple[int, str]]:
  """(1-based line number, text) for every non-blank line."""
  with open(manifest, encoding="utf-8", errors="replace") as f:
    for line_no, text in enumerate(f, start=1):
      if text.strip():
        yield line_no, text


def read_manifest(manifest: str) -> tuple[list[tuple[int, dict]], list[dict]]:
  """([(line, row)] schema-valid and not duplicated, bad-row records). Cheap: no media is read."""
  rows, bad, first_line = [], [], {}
  for line_no, text in manifest_lines(manifest):
    try:
      data = parse_row(text)
      first = first_line.setdefault(row_digest(data), line_no)
      if first != line_no:
        raise duplicate_error(first)
      rows.append((line_no, data))
    except RowError as e:
      bad.append(bad_row(line_no, e))
  return rows, bad


def count_reasons(bad: Iterable[dict]) -> dict[str, int]:
  counts: dict[str, int] = {}
  for b in bad:
    counts[b["reason"]] = counts.get(b["reason"], 0) + 1
  return dict(sorted(counts.items()))


def write_report(path: str, bad: list[dict]) -> None:
  """JSON lines, one per skipped row in line order; written whole or not at all."""
  fs.atomic_write_text(path, "".join(json.dumps(b) + "\n" for b in sorted(bad, key=lambda b: b["line"])))


def split_by_actor(rows: list[Row], test: set[str]) -> dict[str, list[Row]]:
  """{"train": ..., "test": ...}: no actor_id in both."""
  return {"train": [r for r in rows if r.data["actor_id"] not in test],
          "test": [r for r in rows if r.data["actor_id"] in test]}
