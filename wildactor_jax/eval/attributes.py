"""Attribute accuracy: shirt, trousers, hair and skin colours read off the figure.

Per frame: the background is every pixel within `tolerance` of a colour on the image border
(the renderer's backgrounds are plain or smooth, the figure sits inside the frame); the figure
spans the first to the last foreground row and column. Each attribute is read in a
band of the figure's height (fractions from the top, from the renderer's proportions:
docs/method.md's synthetic actors; data/render_actor.py) as a vote of the band's pixels for the
nearest colour of that attribute's palette (pixels far from every palette colour abstain). A
clip's reading is the majority over its frames, so a raised arm in a few frames does not decide.

Accuracy compares the reading with the actor's true identity (`true_attributes`, from the raw
folder's actors.jsonl); hair is not scored for bald actors. The palettes (colour name -> RGB)
come from the raw folder's palettes.json, so the package never imports the renderer.
"""
from __future__ import annotations

import collections

import numpy as np

ATTRIBUTES = ("shirt", "trousers", "hair", "skin")
# (top, bottom) as fractions of the figure's height; (left, right) of its width.
BANDS = {"hair": ((0.0, 0.06), (0.25, 0.75)), "skin": ((0.07, 0.15), (0.25, 0.75)),
         "shirt": ((0.22, 0.45), (0.0, 1.0)), "trousers": ((0.55, 0.72), (0.2, 0.8))}
MAX_DISTANCE = 60.0   # RGB distance beyond which a pixel does not vote


def _extent(flags: np.ndarray) -> tuple[int, int] | None:
  idx = np.flatnonzero(flags)
  return None if idx.size == 0 else (int(idx[0]), int(idx[-1]) + 1)


def foreground(frame: np.ndarray, tolerance: float = 24.0) -> np.ndarray:
  """(H, W) bool: pixels farther than `tolerance` (per channel, Chebyshev) from every border
  colour, the border colours rounded to multiples of 4.

  Counted, not searched: the rounded border colours 4k (k = 0..64 per channel) are marked in a
  65^3 grid, and a pixel p is background when the grid's box k in [(p - tol) / 4, (p + tol) / 4]
  holds any of them, read off 3-D prefix sums in 8 lookups. Exact, and 5x faster than the
  pixel-by-border-colour distance table (up to 252 colours per frame of a blurry sample), which
  was the largest cost in scoring a benchmark's clips."""
  f = frame.astype(np.int32)
  border = np.concatenate([f[0], f[-1], f[:, 0], f[:, -1]]).astype(np.float32)
  k = np.round(border / 4).astype(np.int64)
  grid = np.zeros((66, 66, 66), np.int32)  # grid[k + 1]: prefix sums then start from an empty 0
  grid[k[:, 0] + 1, k[:, 1] + 1, k[:, 2] + 1] = 1
  s = grid.cumsum(0).cumsum(1).cumsum(2)   # s[i, j, l]: colours with k < (i, j, l)
  lo = np.clip(np.ceil((f - tolerance) / 4), 0, 65).astype(np.int64)      # first k in reach
  hi = np.clip(np.floor((f + tolerance) / 4) + 1, 0, 65).astype(np.int64)  # one past the last
  (r0, g0, b0), (r1, g1, b1) = np.moveaxis(lo, -1, 0), np.moveaxis(hi, -1, 0)
  near = (s[r1, g1, b1] - s[r0, g1, b1] - s[r1, g0, b1] - s[r1, g1, b0]
          + s[r0, g0, b1] + s[r0, g1, b0] + s[r1, g0, b0] - s[r0, g0, b0])
  return near == 0


def figure_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
  """(y0, y1, x0, x1) of the figure in a foreground mask, or None when there is none."""
  # First to last foreground row/column, not the longest run: a garment the colour of the
  # background (white trousers on the references' light grey) would split the figure.
  rows, cols = _extent(mask.sum(1) >= 1), _extent(mask.sum(0) >= 1)
  if rows is None or cols is None or rows[1] - rows[0] < 8:
    return None
  return rows[0], rows[1], cols[0], cols[1]


def _vote(pixels: np.ndarray, palette: dict) -> str | None:
  names = sorted(palette)
  colours = np.asarray([palette[n] for n in names], np.float32)
  d = np.linalg.norm(pixels[:, None, :].astype(np.float32) - colours[None], axis=-1)
  near = d.min(1) <= MAX_DISTANCE
  if not near.any():
    return None
  counts = np.bincount(d[near].argmin(1), minlength=len(names))
  return names[int(counts.argmax())]


def read_frame(frame: np.ndarray, palettes: dict) -> dict[str, str | None]:
  """One frame (H, W, 3) uint8 -> {attribute: colour name or None}; palettes: {attribute:
  {colour name: RGB}}."""
  mask = foreground(frame)
  box = figure_box(mask)
  if box is None:
    return dict.fromkeys(ATTRIBUTES)
  y0, y1, x0, x1 = box
  out = {}
  for attr, ((t, b), (l, r)) in BANDS.items():
    ys = slice(y0 + int(t * (y1 - y0)), max(y0 + int(t * (y1 - y0)) + 1, y0 + int(b * (y1 - y0))))
    xs = slice(x0 + int(l * (x1 - x0)), max(x0 + int(l * (x1 - x0)) + 1, x0 + int(r * (x1 - x0))))
    region, m = frame[ys, xs], mask[ys, xs]
    pixels = region[m] if m.sum() >= 2 else region.reshape(-1, 3)
    out[attr] = _vote(pixels, palettes[attr])
  return out


def read_clip(frames: np.ndarray, palettes: dict) -> dict[str, str | None]:
  """(T, H, W, 3) uint8 -> the majority reading over frames (None when no frame reads it)."""
  votes = collections.defaultdict(collections.Counter)
  for frame in frames:
    for attr, name in read_frame(frame, palettes).items():
      if name is not None:
        votes[attr][name] += 1
  return {a: (max(sorted(votes[a]), key=votes[a].get) if votes[a] else None) for a in ATTRIBUTES}


def true_attributes(identity: dict) -> dict[str, str | None]:
  """An actors.jsonl row (render_actor.Identity's fields) -> the colours scored."""
  return {"shirt": identity["shirt_colour"], "trousers": identity["trouser_colour"],
          "hair": None if identity["hair_style"] == "bald" else identity["hair_colour"],
          "skin": identity["skin"]}


def accuracy(reading: dict, truth: dict) -> dict[str, float]:
  """{attribute: 1.0 | 0.0} for the attributes the truth defines (NaN where it does not)."""
  return {a: (float("nan") if truth.get(a) is None else float(reading.get(a) == truth[a]))
          for a in ATTRIBUTES}
