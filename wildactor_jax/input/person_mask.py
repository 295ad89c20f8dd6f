"""Where the person is on the latent grid: per-frame body boxes -> a (T', H', W') token mask.

Identity lives in the few latent tokens the person covers: at the demo's 8 x 8 grid a standing
figure is one or two tokens wide, a third of the tokens with its box, and far less in a wide shot.
The mean-squared flow loss over every token is then mostly background, and a small model spends
its capacity there. `train.person_loss_weight` weights the person's tokens up
(`train_lib.flow.token_weights`); this module turns the boxes a dataset gives (the synthetic
renderer's annotations; a person detector's or SAM2's tracks for real clips, as Actor-18M
curates) into the mask each encoded record carries (`records`, field `person_mask`).

Boxes file (JSON lines, one row per clip; other keys ignored, so the synthetic renderer's
annotations.jsonl is one):

    {"video": "<the manifest row's video path>", "body_box": [[x0, y0, x1, y1], ...]}

one box per frame of the clip, in fractions of the frame's width and height (clipping is done
here). A causal video VAE maps frame 0 to latent frame 0 and frames 1 + tf (k - 1) .. tf k to
latent frame k (Wan's 4x temporal factor); a latent frame's mask is the union of its frames'
boxes, a token marked when its cell overlaps a box at all.
"""
from __future__ import annotations

import numpy as np

from wildactor_jax import fs


class BoxesError(ValueError):
  """A boxes file that breaks the format above (the message names the file and line)."""


def latent_frames_of(num_frames: int, temporal_factor: int) -> list[range]:
  """The pixel frames each latent frame of a causal VAE encodes: [0], then groups of tf."""
  if num_frames < 1 or (num_frames - 1) % temporal_factor:
    raise ValueError(f"{num_frames} frames: expected 1 + {temporal_factor} k")
  return [range(0, 1)] + [range(1 + temporal_factor * k, 1 + temporal_factor * (k + 1))
                          for k in range((num_frames - 1) // temporal_factor)]


def latent_mask(boxes: np.ndarray, temporal_factor: int, grid_h: int, grid_w: int) -> np.ndarray:
  """(F, 4) per-frame boxes [x0, y0, x1, y1] (fractions) -> (T', grid_h, grid_w) uint8 mask."""
  boxes = np.clip(np.asarray(boxes, np.float64), 0.0, 1.0)
  rows_lo, cols_lo = np.arange(grid_h) / grid_h, np.arange(grid_w) / grid_w
  groups = latent_frames_of(len(boxes), temporal_factor)
  out = np.zeros((len(groups), grid_h, grid_w), np.uint8)
  for k, frames in enumerate(groups):
    for x0, y0, x1, y1 in boxes[list(frames)]:
      rows = (rows_lo + 1.0 / grid_h > y0) & (rows_lo < y1)
      cols = (cols_lo + 1.0 / grid_w > x0) & (cols_lo < x1)
      out[k] |= (rows[:, None] & cols[None, :]).astype(np.uint8)
  return out


def read_boxes(path: str) -> dict[str, np.ndarray]:
  """{video path: (F, 4) float32 boxes} from a boxes file; BoxesError on a malformed row."""
  out = {}
  for where, row in fs.read_json_lines(path, BoxesError):
    if not isinstance(row, dict) or not isinstance(row.get("video"), str):
      raise BoxesError(f"{where}: expected an object with a string 'video'")
    if "body_box" not in row:
      raise BoxesError(f"{where}: no body_box (expected [x0, y0, x1, y1] for every frame; "
                       "data/synthetic_actors.py writes them since this field existed)")
    try:
      boxes = np.asarray(row["body_box"], np.float32)
    except (TypeError, ValueError):
      boxes = np.zeros((0,), np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not len(boxes) or not np.isfinite(boxes).all():
      raise BoxesError(f"{where}: body_box: expected one finite [x0, y0, x1, y1] per frame")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
      raise BoxesError(f"{where}: body_box: expected x1 >= x0 and y1 >= y0")
    out[row["video"]] = boxes
  return out
