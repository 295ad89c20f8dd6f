"""The benchmark end to end: embedder -> per-clip metrics -> intervals -> one JSON result.

    net = fit_embedder(ds, train_actors)                 # training actors only
    result = score(ds, net, generated_rows, held_out)    # identity, retrieval, attributes, ...
    result["fidelity"] = fidelity(ds, net, rows, held_out)

Every figure is a mean over clips with a bootstrap 95% interval over identities (clips of all
seeds pooled per identity). Ground-truth clips of the held-out actors go through the same
scoring as the "ground_truth" condition: the ceiling each figure can reach with this embedder
and attribute reader. `summary` flattens the figures under stable names (NAME and NAME_ci95).
"""
from __future__ import annotations

import numpy as np

from wildactor_jax import fs
from wildactor_jax.eval import attributes, bootstrap, embedder, fidelity as fid, metrics, raw
from wildactor_jax.eval.generated import CONDITIONS, target_actor

GROUND_TRUTH = "ground_truth"
RETRIEVAL_NAMES = {"with_refs": "retrieval_top1_with_refs",
                   "without_refs": "retrieval_top1_without_refs",
                   "swapped": "retrieval_top1_swapped_follows_refs",
                   GROUND_TRUTH: "retrieval_top1_ground_truth"}


def fit_embedder(ds: raw.RawDataset, train_actors, cfg=embedder.EmbedderConfig(), seed: int = 0,
                 log=None) -> embedder.IdentityNet:
  images, labels = raw.identity_images(ds, train_actors)
  return embedder.train(images, labels, cfg, seed, log)


def _gallery(ds, net, actors):
  """{actor: (body reference embeddings (R, D), their yaws (R,))}."""
  out = {}
  for a in actors:
    refs = ds.gallery(a, "body")
    if not refs:
      raise raw.RawDataError(f"{ds.root}: actor {a} has no body view renders under refs/{a}/")
    out[a] = (embedder.embed(net, np.stack([raw.read_image(r.path) for r in refs])),
              np.array([r.yaw for r in refs]))
  return out


def _clip_yaws(ds, row) -> tuple | None:
  if row.get("yaw") is not None:
    return tuple(row["yaw"])
  src = row.get("source_video")
  if src is None:
    return None
  full = fs.join(ds.root, src)
  match = [c for c in ds.clips if c.video == full]
  return match[0].yaws if match else None


def score_clips(ds, net, clips: list[dict], gallery: dict, attr_seed: int | None) -> list[dict]:
  """clips: [{"condition", "target", "seed", "video", "yaws"}] -> per-clip metric rows."""
  refs = {a: e for a, (e, _) in gallery.items()}
  out = []
  for c in clips:
    pixels = raw.read_video(c["video"])
    emb = embedder.embed(net, pixels)
    ref_emb, ref_yaws = gallery[c["target"]]
    yaws = raw.frame_yaws(c["yaws"], len(pixels))
    if yaws is None:  # no intended views known: pair every frame with the frontal render
      yaws = np.zeros(len(pixels))
    sim = metrics.view_aware_similarity(emb, yaws, ref_emb, ref_yaws)
    row = {"condition": c["condition"], "target": c["target"], "seed": c["seed"],
           "video": c["video"], "similarity": {k: sim[k] for k in ("mean",) + metrics.VIEW_BINS},
           "retrieved": metrics.retrieve(emb, refs),
           "temporal_consistency": metrics.temporal_consistency(emb)}
    if attr_seed is not None:
      truth = attributes.actor_attributes(c["target"], attr_seed)
      row["attributes"] = attributes.accuracy(attributes.read_clip(pixels), truth)
    out.append(row)
  return out


def _nan(v):
  return float("nan") if v is None else float(v)


def aggregate(rows: list[dict], seed: int = 0) -> dict:
  """{condition: {figure: {"mean", "ci95", "n", "groups"}}} over per-clip rows."""
  result = {}
  for cond in sorted({r["condition"] for r in rows}):
    rs = [r for r in rows if r["condition"] == cond]
    groups = [r["target"] for r in rs]
    ci = lambda values: bootstrap.mean_ci(values, groups, seed=seed)
    figures = {"retrieval_top1": ci([float(r["retrieved"] == r["target"]) for r in rs]),
               "identity_similarity": ci([r["similarity"]["mean"] for r in rs]),
               "temporal_consistency": ci([r["temporal_consistency"] for r in rs])}
    for b in metrics.VIEW_BINS:
      figures[f"identity_similarity_{b}"] = ci([_nan(r["similarity"][b]) for r in rs])
    if all("attributes" in r for r in rs):
      for a in attributes.ATTRIBUTES:
        figures[f"attribute_accuracy_{a}"] = ci([r["attributes"][a] for r in rs])
      figures["attribute_accuracy"] = ci([np.nanmean(list(r["attributes"].values()))
                                          for r in rs])
    figures["seeds"] = sorted({int(r["seed"]) for r in rs})
    result[cond] = figures
  return result


def clip_list(ds, generated_rows, held_out) -> list[dict]:
  """The ground-truth clips of the held-out actors, then the generated ones, as score_clips
  inputs; a generated clip whose target is not held out is an error."""
  clips = [{"condition": GROUND_TRUTH, "target": c.actor, "seed": 0, "video": c.video,
            "yaws": c.yaws} for a in held_out for c in ds.clips_of(a)]
  for r in generated_rows:
    t = target_actor(r)
    if t not in held_out:
      raise raw.RawDataError(f"generated clip {r['video']}: target actor {t} is not held out "
                             f"(held out: {', '.join(held_out)})")
    clips.append({"condition": r["condition"], "target": t, "seed": int(r["seed"]),
                  "video": r["video"], "yaws": _clip_yaws(ds, r)})
  return clips


def fidelity(ds, net, generated_rows, held_out, seed: int = 0) -> dict:
  """Fréchet distance on embedder features: each generated condition vs half A of the real
  held-out frames, and half B vs half A (the reference value; halves split by clip). Too few
  held-out clips (< 4): the real frames of every actor are used."""
  real = [c for a in held_out for c in ds.clips_of(a)]
  if len(real) < 4:
    real = ds.clips
  feats, groups = [], []
  for i, c in enumerate(real):
    f = embedder.embed_and_features(net, raw.read_video(c.video))[1]
    feats.append(f)
    groups += [i] * len(f)
  feats = np.concatenate(feats)
  split, half_a = fid.real_split_distance(feats, groups, seed)
  out = {"real_split": split, "real_frames": int(len(feats)),
         "real_clips": int(len(real))}
  for cond in CONDITIONS:
    rows = [r for r in generated_rows if r["condition"] == cond]
    if rows:
      g = np.concatenate([embedder.embed_and_features(net, raw.read_video(r["video"]))[1]
                          for r in rows])
      out[cond] = fid.frechet_distance(g, feats[half_a])
  return out


def summary(per_condition: dict, chance: float, fidelity_result: dict | None) -> dict:
  """Flat, stable names: NAME and NAME_ci95 for every figure."""
  out = {"chance": chance, "chance_ci95": [chance, chance]}
  for cond, figures in per_condition.items():
    for name, v in figures.items():
      if not isinstance(v, dict):
        continue
      key = RETRIEVAL_NAMES[cond] if name == "retrieval_top1" else f"{name}_{cond}"
      out[key], out[key + "_ci95"] = v["mean"], v["ci95"]
  for k, v in (fidelity_result or {}).items():
    if k in CONDITIONS or k == "real_split":
      out[f"fidelity_{k}"] = v
  return out


def score(ds, net, generated_rows, held_out, attr_seed: int | None = 0, seed: int = 0) -> dict:
  """The identity part of the benchmark over ground-truth and generated clips."""
  gallery = _gallery(ds, net, held_out)
  rows = score_clips(ds, net, clip_list(ds, generated_rows, held_out), gallery, attr_seed)
  per_condition = aggregate(rows, seed)
  fidelity_result = fidelity(ds, net, generated_rows, held_out, seed) if generated_rows else None
  chance = 1.0 / len(held_out)
  return {"held_out_actors": list(held_out), "chance": chance, "per_condition": per_condition,
          "fidelity": fidelity_result, "clips": rows,
          "summary": summary(per_condition, chance, fidelity_result)}
