"""Person boxes -> latent token masks (input/person_mask.py) and the renderer's boxes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from data import synthetic_actors
from wildactor_jax.input import person_mask


def test_latent_frames_group_like_a_causal_vae():
  assert [list(r) for r in person_mask.latent_frames_of(9, 4)] == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
  with pytest.raises(ValueError, match="1 \\+ 4 k"):
    person_mask.latent_frames_of(8, 4)


def test_latent_mask_is_the_union_of_each_groups_boxes():
  boxes = np.array([[0.0, 0.0, 0.3, 0.2]] +          # frame 0: the top-left 2 x 3 cells of 8 x 8
                   [[0.5, 0.5, 0.6, 0.6]] * 3 +       # frames 1-3: one cell ...
                   [[0.9, 0.9, 1.5, 1.2]] +           # frame 4: ... and the corner, clipped
                   [[0.0, 0.0, 0.0, 0.0]] * 4)        # frames 5-8: an empty box marks nothing
  m = person_mask.latent_mask(boxes, 4, 8, 8)
  assert m.shape == (3, 8, 8) and m.dtype == np.uint8
  want0 = np.zeros((8, 8), np.uint8)
  want0[:2, :3] = 1                                   # y < 0.2 -> rows 0-1; x < 0.3 -> cols 0-2
  np.testing.assert_array_equal(m[0], want0)
  assert sorted(zip(*np.nonzero(m[1]))) == [(4, 4), (7, 7)]
  assert not m[2].any()


def test_read_boxes_errors_name_the_file_and_line(tmp_path):
  good = {"video": "clips/a.mp4", "body_box": [[0.1, 0.2, 0.3, 0.9]] * 5, "yaw": [0] * 5}
  path = tmp_path / "boxes.jsonl"
  path.write_text(json.dumps(good) + "\n\n")
  boxes = person_mask.read_boxes(str(path))
  assert list(boxes) == ["clips/a.mp4"] and boxes["clips/a.mp4"].shape == (5, 4)
  for row, match in (("not json", "not valid JSON"), (json.dumps({"body_box": []}), "'video'"),
                     (json.dumps({"video": "clips/b.mp4"}), "no body_box"),
                     (json.dumps(dict(good, body_box=[[0.1, 0.2, 0.3]])), "body_box"),
                     (json.dumps(dict(good, body_box=[[0.5, 0.2, 0.3, 0.9]])), "x1 >= x0"),
                     (json.dumps(dict(good, body_box="x")), "body_box")):
    path.write_text(json.dumps(good) + "\n" + row + "\n")
    with pytest.raises(person_mask.BoxesError, match=f"boxes.jsonl:2: .*{match}"):
      person_mask.read_boxes(str(path))


def test_renderer_boxes_hold_every_pixel_the_figure_paints(tmp_path, monkeypatch):
  """annotations.jsonl's body_box: the clip rendered again without the figure differs from the
  real one only inside that frame's box."""
  (tmp_path / "refs").mkdir()
  (tmp_path / "clips").mkdir()
  job = (str(tmp_path), 3, 1, 0, 64, 9, 8, "plain", False, synthetic_actors.FIGURE_SCALE)
  captured = []
  monkeypatch.setattr(synthetic_actors.media, "write_mp4",
                      lambda path, frames, fps: captured.append(np.stack(frames).astype(int)))
  _, note, _ = synthetic_actors.render_clip(job)
  draw = synthetic_actors.ra.draw_figure  # the renderer's own import of render_actor
  monkeypatch.setattr(synthetic_actors.ra, "draw_figure", lambda img, *a: draw(img.copy(), *a))
  synthetic_actors.render_clip(job)
  with_figure, background = captured
  boxes = np.asarray(note["body_box"])
  assert boxes.shape == (9, 4)
  for f, (x0, y0, x1, y1) in enumerate(boxes * 64):
    changed = np.abs(with_figure[f] - background[f]).max(-1) > 8
    ys, xs = np.nonzero(changed)
    assert len(ys) > 20, f                            # the figure is there ...
    assert xs.min() >= np.floor(x0) - 1 and xs.max() <= np.ceil(x1) + 1, f  # ... inside its box
    assert ys.min() >= np.floor(y0) - 1 and ys.max() <= np.ceil(y1) + 1, f
