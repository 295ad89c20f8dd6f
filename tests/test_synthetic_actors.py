"""Synthetic actor generator: exact public schema, truthful labels, references unlike the clip
(never its own frames; other poses, places and scales), moving clips whose prompt says what they
do, the evaluation gallery apart from the references, determinism, CLI errors."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from data import render_actor, synthetic_actors

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "data" / "synthetic_actors.py"

ROW_KEYS = {"video", "prompt", "actor_id", "source", "width", "height", "duration_sec", "refs"}
REF_KEYS = {"path", "region", "view", "angle", "visibility", "source_frame", "metadata"}


def run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                        timeout=120)


def digest(root: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp("syn") / "ds"
  proc = run("--out", str(out), "--actors", "3", "--clips-per-actor", "2", "--seed", "5",
             "--size", "48", "--frames", "9", "--workers", "2")
  assert proc.returncode == 0, proc.stderr
  assert json.loads(proc.stdout.strip().splitlines()[-1])["clips"] == 6
  return out


def rows(root: pathlib.Path, name: str = "manifest.jsonl") -> list[dict]:
  return [json.loads(line) for line in (root / name).read_text().splitlines()]


def test_schema_is_exactly_the_public_row(dataset):
  manifest = rows(dataset)
  assert len(manifest) == 6
  for row in manifest:
    assert set(row) == ROW_KEYS
    assert (row["width"], row["height"]) == (48, 48)
    assert isinstance(row["prompt"], str) and row["prompt"]
    assert {r["region"] for r in row["refs"]} == {"face", "body", "three_view"}
    for ref in row["refs"]:
      assert set(ref) == REF_KEYS
      assert ref["view"] in ("front", "left", "right", "back", "canonical")
      assert ref["metadata"]["source"] in ("self_crop", "view_aug", "attr_aug", "canonical")
      assert ref["metadata"]["pose"] in ("neutral", "varied")
      assert 0.0 <= ref["visibility"] <= 1.0
      with Image.open(dataset / ref["path"]) as img:
        img.load()


def test_media_decodes_with_the_requested_geometry(dataset):
  for row in rows(dataset):
    video = iio.imread(dataset / row["video"])
    assert video.shape == (9, 48, 48, 3)
    assert video.std() > 10  # a figure on a background, not a blank frame


def test_labels_are_truthful(dataset):
  notes = {n["video"]: n for n in rows(dataset, "annotations.jsonl")}
  for row in rows(dataset):
    yaws = notes[row["video"]]["yaw"]
    assert len(yaws) == 9
    for ref in row["refs"]:
      if ref["region"] == "three_view":
        assert (ref["view"], ref["angle"]) == ("canonical", 0.0)
        continue
      assert ref["view"] == render_actor.view_label(ref["angle"])
      if ref["metadata"]["source"] == "self_crop":  # crop angle = that frame's true yaw
        own = ref["path"].split("_")[1]           # a0001_c01_face_f004.png -> c01
        other = [v for v in notes if v.endswith(f"{row['actor_id']}_{own}.mp4")][0]
        assert ref["angle"] == pytest.approx(notes[other]["yaw"][ref["source_frame"]], abs=0.01)
      else:
        assert ref["source_frame"] == -1
  # Orbit and turn clips change yaw over time; the generator must cover several views overall.
  all_yaws = np.concatenate([n["yaw"] for n in notes.values()])
  assert len({render_actor.view_label(a) for a in all_yaws}) >= 2


def test_identity_is_fixed_per_actor(dataset):
  by_actor: dict[str, list[dict]] = {}
  for row in rows(dataset):
    by_actor.setdefault(row["actor_id"], []).append(row)
  assert len(by_actor) == 3
  descriptions = set()
  identities = {r["actor_id"]: r for r in rows(dataset, "actors.jsonl")}
  for actor, clips in by_actor.items():
    shared = [{r["path"] for r in c["refs"] if r["metadata"]["source"] != "self_crop"} for c in clips]
    assert shared[0] == shared[1] and all(f"refs/{actor}/" in p for p in shared[0])
    ident = synthetic_actors.actor_identity(5, int(actor[1:]))
    assert identities[actor]["shirt_colour"] == ident.shirt_colour
    # Identity lives in the references: the default prompt names no colour of the actor.
    assert all(c["prompt"].startswith("A person ") for c in clips)
    assert all(word not in c["prompt"] for c in clips for word in ident.describe().split()
               if word in render_actor.CLOTH_COLOURS or word in render_actor.SKIN_TONES)
    descriptions.add(ident.describe())
  assert len(descriptions) == 3


def test_references_are_unlike_the_clip(dataset):
  """A clip's crops come from the actor's OTHER clips; renders show other poses and places; the
  evaluation gallery shares no image with the references."""
  gallery = rows(dataset, "gallery.jsonl")
  for row in rows(dataset):
    clip = row["video"].split("/")[-1][:-4]                       # a0001_c00
    crops = [r for r in row["refs"] if r["metadata"]["source"] == "self_crop"]
    assert crops and not any(r["path"].startswith(f"refs/{clip}_") for r in crops)
    assert {r["metadata"]["source"] for r in row["refs"]} >= {"view_aug", "attr_aug"}
    posed = [r for r in row["refs"] if r["metadata"]["pose"] == "varied" and r["region"] == "body"]
    assert len(posed) >= 4
    refs = {r["path"] for r in row["refs"]}
    own_gallery = [g for g in gallery if g["actor_id"] == row["actor_id"]]
    assert len(own_gallery) == synthetic_actors.GALLERY_VIEWS
    assert not refs & {g["path"] for g in own_gallery}
  # The figure's place in the crop varies between posed renders (not always centred).
  actor = rows(dataset)[0]["actor_id"]
  centres = []
  for k in range(synthetic_actors.POSE_REFS):
    img = np.asarray(Image.open(dataset / f"refs/{actor}/body_pose{k}.png").convert("RGB"), int)
    xs = np.flatnonzero((np.abs(img - 235).max(-1) > 30).any(0))
    centres.append((xs[0] + xs[-1]) / 2)
  assert np.ptp(centres) > 2


def test_clips_move_and_prompts_say_how(dataset):
  notes = {n["video"]: n for n in rows(dataset, "annotations.jsonl")}
  for row in rows(dataset):
    note = notes[row["video"]]
    plan_words = {"walk": "walks", "wave": "waves", "turn": "turns", "jump": "jumps"}
    assert plan_words[note["motion"]] in row["prompt"]
    assert {"orbit": "orbits", "pan": "pans", "zoom": "zooms"}[note["camera"]] in row["prompt"]
    assert synthetic_actors.VIEW_TEXT[note["start_view"]] in row["prompt"]
    if note["motion"] == "turn":    # a turn rotates the figure by 180 degrees
      d = (note["yaw"][-1] - note["yaw"][0]) % 360
      assert min(d, 360 - d) > 90 or note["camera"] == "orbit"
    video = iio.imread(dataset / row["video"]).astype(int)
    assert np.abs(video[-1] - video[0]).mean() > 1.0   # something moves
  words = set(json.loads((dataset / "vocabulary.json").read_text()))
  for row in rows(dataset):
    assert set(re.findall(r"\w+", row["prompt"].lower())) <= words


def test_describing_prompts_and_scene_background_are_options(tmp_path):
  out = tmp_path / "described"
  synthetic_actors.generate(str(out), 2, 1, seed=5, size=32, frames=5, workers=1,
                            background="scene", describe_appearance=True)
  for row in rows(out):
    ident = synthetic_actors.actor_identity(5, int(row["actor_id"][1:])).describe()
    assert row["prompt"].lower().startswith(ident.lower())


def test_figure_scale_sizes_the_figure_and_changes_nothing_else(dataset, tmp_path):
  """--figure-scale: the same clips (motion, camera, views, prompts) with the figure drawn larger;
  a range outside (0, 1] is a one-line error before anything is written."""
  big = tmp_path / "big"
  synthetic_actors.generate(str(big), 3, 2, seed=5, size=48, frames=9, workers=1,
                            figure_scale=(0.8, 0.9))
  small, large = rows(dataset, "annotations.jsonl"), rows(big, "annotations.jsonl")
  assert [r["prompt"] for r in rows(dataset)] == [r["prompt"] for r in rows(big)]
  for a, b in zip(small, large):
    assert {k: a[k] for k in ("motion", "camera", "yaw")} == {k: b[k] for k in
                                                              ("motion", "camera", "yaw")}
    height = lambda note: np.mean([y1 - y0 for _, y0, _, y1 in note["body_box"]])
    assert height(b) > 1.1 * height(a)
  for bad in (["0", "0.5"], ["0.7", "0.6"], ["0.5", "1.2"]):
    proc = run("--out", str(tmp_path / "x"), "--actors", "1", "--clips-per-actor", "1",
               "--figure-scale", *bad)
    assert proc.returncode == 2 and "--figure-scale" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x").exists()


def test_plain_background_is_the_same_in_every_clip(dataset):
  """The controlled background: the top-left corner (wall) and bottom-left (floor) pixels of
  every frame are the fixed colours, so an actor's colours come from the figure alone."""
  for row in rows(dataset):
    frames = iio.imread(dataset / row["video"]).astype(int)
    assert np.abs(frames[:, 1, 1] - synthetic_actors.PLAIN_WALL).max() <= 6
    assert np.abs(frames[:, -2, 1] - synthetic_actors.PLAIN_FLOOR).max() <= 6


def test_deterministic_by_seed_and_independent_of_workers(dataset, tmp_path):
  again = tmp_path / "again"
  synthetic_actors.generate(str(again), 3, 2, seed=5, size=48, frames=9, workers=1)
  assert digest(again) == digest(dataset)
  other = tmp_path / "other"
  synthetic_actors.generate(str(other), 3, 2, seed=6, size=48, frames=9, workers=1)
  assert digest(other) != digest(dataset)


def test_cli_errors_are_one_line_and_leave_nothing(tmp_path):
  proc = run("--out", str(tmp_path / "x"), "--actors", "1", "--clips-per-actor", "1",
             "--frames", "8")
  assert proc.returncode != 0 and "1 + 4k" in proc.stderr
  assert not (tmp_path / "x").exists()
  busy = tmp_path / "busy"
  busy.mkdir()
  (busy / "keep.txt").write_text("x")
  proc = run("--out", str(busy), "--actors", "1", "--clips-per-actor", "1", "--size", "32",
             "--frames", "5")
  assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0
  assert "refusing to overwrite" in proc.stderr
  assert sorted(os.listdir(busy)) == ["keep.txt"]
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp folder left
