"""Long-form identity coherence: the same actor across the shots of a story and along a clip
extended segment by segment (the WildActor paper's narrative-coherence axis, at our scale).

Pure functions of embeddings from `embedder` (unit vectors; cosine = dot product):
- shot_to_references: each shot's view-aware similarity to the references (metrics'), per view
  bin;
- shot_to_shot: every pair of shots, the cosine of their frame prototypes, overall and per view
  bin (a bin counts when both shots show it);
- drift: per-frame similarity as a function of the frame index across continued segments: the
  least-squares slope (per 100 frames) and the mean of each segment;
- summarise: the figures of many stories with bootstrap 95% intervals over actors.

Frame views: a generated frame's yaw is not known. Unless the caller passes yaws, each frame
takes the yaw of the reference it is most similar to (`estimate_yaws`), so the per-bin figures
group frames by the view they look most like.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from wildactor_jax.eval import bootstrap, metrics


def estimate_yaws(frames: np.ndarray, refs: np.ndarray, ref_yaws) -> np.ndarray:
  """(T,) the yaw of the most similar reference for each frame embedding (T, D)."""
  sims = metrics.unit(frames) @ metrics.unit(refs).T
  return np.asarray(ref_yaws, np.float64)[np.argmax(sims, axis=1)]


def _yaws(shots, refs, ref_yaws, shot_yaws):
  if shot_yaws is None:
    return [estimate_yaws(s, refs, ref_yaws) for s in shots]
  if len(shot_yaws) != len(shots):
    raise ValueError(f"{len(shots)} shots but {len(shot_yaws)} yaw lists")
  return [np.asarray(y, np.float64) for y in shot_yaws]


def shot_to_references(shots: list[np.ndarray], refs: np.ndarray, ref_yaws,
                       shot_yaws=None) -> list[dict]:
  """Per shot: {"mean", "front", "side", "back"} view-aware similarity to the references (a bin
  the shot never shows is None)."""
  out = []
  for emb, yaws in zip(shots, _yaws(shots, refs, ref_yaws, shot_yaws)):
    sim = metrics.view_aware_similarity(emb, yaws, refs, ref_yaws)
    out.append({k: sim[k] for k in ("mean",) + metrics.VIEW_BINS})
  return out


def shot_to_shot(shots: list[np.ndarray], refs: np.ndarray, ref_yaws,
                 shot_yaws=None) -> list[dict]:
  """Per pair of shots (i < j): {"pair", "mean": cosine of the shots' prototypes, and per view
  bin the cosine of the prototypes of the frames in that bin (None unless both show it)}."""
  bins = [metrics.view_bin(y) for y in _yaws(shots, refs, ref_yaws, shot_yaws)]
  out = []
  for i, j in combinations(range(len(shots)), 2):
    row = {"pair": (i, j),
           "mean": float(metrics.prototype(shots[i]) @ metrics.prototype(shots[j]))}
    for b in metrics.VIEW_BINS:
      a, c = shots[i][bins[i] == b], shots[j][bins[j] == b]
      row[b] = float(metrics.prototype(a) @ metrics.prototype(c)) if len(a) and len(c) else None
    out.append(row)
  return out


def drift(similarity, segment_starts) -> dict:
  """similarity (T,) per frame of one long clip; segment_starts: the first frame of each
  segment (ascending, starting at 0). -> {"slope_per_100_frames", "by_segment": mean per
  segment, "first_to_last": last segment's mean minus the first's}."""
  sim = np.asarray(similarity, np.float64)
  starts = [int(s) for s in segment_starts]
  if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])) \
      or starts[-1] >= len(sim):
    raise ValueError(f"segment starts {starts}: expected ascending frame indices from 0, below "
                     f"the clip's {len(sim)} frames")
  frames = np.arange(len(sim), dtype=np.float64)
  slope = float(np.polyfit(frames, sim, 1)[0]) if len(sim) > 1 else 0.0
  ends = starts[1:] + [len(sim)]
  by_segment = [float(sim[a:b].mean()) for a, b in zip(starts, ends)]
  return {"slope_per_100_frames": 100.0 * slope, "by_segment": by_segment,
          "first_to_last": by_segment[-1] - by_segment[0]}


def story_figures(film: np.ndarray, shot_frames, refs: np.ndarray, ref_yaws,
                  segment_starts=None) -> dict:
  """Every coherence figure of one story. film: its frames' embeddings (N, D); shot_frames: per
  shot its [start, end) frames; segment_starts: for drift, the first frame of each continued
  segment (None: no drift)."""
  shots = [film[a:b] for a, b in shot_frames]
  figures = {"shot_to_references": shot_to_references(shots, refs, ref_yaws),
             "shot_to_shot": shot_to_shot(shots, refs, ref_yaws)}
  if segment_starts is not None:
    per_frame = metrics.view_aware_similarity(film, estimate_yaws(film, refs, ref_yaws),
                                              refs, ref_yaws)["per_frame"]
    figures["drift"] = drift(per_frame, segment_starts)
  return figures


def _nan(v):
  return float("nan") if v is None else float(v)


def summarise(stories: list[dict], seed: int = 0) -> dict:
  """stories: [{"actor", "figures": story_figures(...)}] -> means with bootstrap 95% intervals
  over actors: shot_to_references and shot_to_shot (overall and per view bin), and for drift
  the slope and each segment's mean."""
  actors_of = lambda key: [s["actor"] for s in stories for _ in s["figures"][key]]
  out = {}
  for key in ("shot_to_references", "shot_to_shot"):
    groups = actors_of(key)
    out[key] = {b: bootstrap.mean_ci([_nan(r[b]) for s in stories for r in s["figures"][key]],
                                     groups, seed=seed) for b in ("mean",) + metrics.VIEW_BINS}
  drifting = [s for s in stories if "drift" in s["figures"]]
  if drifting:
    actors = [s["actor"] for s in drifting]
    d = [s["figures"]["drift"] for s in drifting]
    segments = max(len(x["by_segment"]) for x in d)
    out["drift"] = {
        "slope_per_100_frames": bootstrap.mean_ci([x["slope_per_100_frames"] for x in d], actors,
                                                  seed=seed),
        "first_to_last": bootstrap.mean_ci([x["first_to_last"] for x in d], actors, seed=seed),
        "by_segment": [bootstrap.mean_ci([_nan(x["by_segment"][i] if i < len(x["by_segment"])
                                               else None) for x in d], actors, seed=seed)
                       for i in range(segments)]}
  return out
