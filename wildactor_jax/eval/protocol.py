"""The benchmark end to end: embedder and probes -> per-clip metrics -> intervals -> one result.

    net = fit_embedder(ds, train_actors)                # training actors only
    probe = fit_probes(ds, train_actors)                # real clips of training actors only
    result = score(ds, net, probe, generated_rows, held_out)

Two axes, as the WildActor paper evaluates:
- identity: view-aware similarity (each frame paired with the gallery render nearest the yaw the
  probe READS from that frame) and retrieval top-1 among the held-out actors, both against the
  actor's GALLERY, which never holds an image given as a reference (eval/raw.py); attribute
  accuracy; temporal consistency; and, per sampled frame, the frame's own retrieval top-1 and
  similarity (`identity_over_time`: lost at once or by drift);
- prompt and motion (eval/adherence.py): prompt adherence (motion, camera, per-frame yaw read by
  the probes against the prompt's), copy-paste against the references actually given, yaw error
  and distance to the references' views (pose-locking), dynamic degree against the source clip.
A pasted reference maximises nothing on both: it scores CP near +1, dynamic degree near 0 and
the wrong motion, camera and views.

Every figure is a mean over clips with a bootstrap 95% interval over identities (clips of all
seeds pooled per identity). Ground-truth clips of the held-out actors go through the same scoring
as the "ground_truth" condition: the ceiling each figure can reach with these readers (its prompt
adherence is `prompt_adherence_real`). Generated clips of the FIRST_FRAME diagnostic (the frozen
backbone continuing each clip from its own true first frame, with the references) are scored as
their own condition: what the backbone keeps of an identity it is handed in place, a bound on
what references from other poses and places can give. Given the run's autoencoder, the same clips encoded and
decoded are the "autoencoded" condition: the ceiling a generator working in that latent space can
reach (a perfect one would produce exactly those clips), so a gap splits into what the
autoencoder loses and what the generator does. `summary` flattens the figures under stable names (NAME and
NAME_ci95); `compare` gives paired differences between two results (ablations).
"""
from __future__ import annotations

import numpy as np

from wildactor_jax import fs
from wildactor_jax.eval import (adherence, attributes, bootstrap, embedder, fidelity as fid,
                                metrics, probes, raw)
from wildactor_jax.eval.generated import (ALL_CONDITIONS, FIRST_FRAME, benchmark_references,
                                          target_actor)

GROUND_TRUTH = "ground_truth"
AUTOENCODED = "autoencoded"
RETRIEVAL_NAMES = {"with_refs": "retrieval_top1_with_refs",
                   "without_refs": "retrieval_top1_without_refs",
                   "swapped": "retrieval_top1_swapped_follows_refs",
                   GROUND_TRUTH: "retrieval_top1_ground_truth",
                   AUTOENCODED: "retrieval_top1_autoencoded",
                   FIRST_FRAME: "retrieval_top1_first_frame"}
# Per-clip figures (row key -> figure name); each gets a mean and an interval per condition.
FIGURES = ("identity_similarity", "temporal_consistency", "prompt_adherence", "motion_accuracy",
           "camera_accuracy", "yaw_accuracy", "copy_paste", "dynamic_degree", "yaw_error",
           "yaw_to_reference", "intended_yaw_to_reference")


def fit_embedder(ds: raw.RawDataset, train_actors, cfg=embedder.EmbedderConfig(), seed: int = 0,
                 log=None) -> embedder.IdentityNet:
  images, labels = raw.identity_images(ds, train_actors)
  return embedder.train(images, labels, cfg, seed, log)


def fit_probes(ds: raw.RawDataset, train_actors, cfg=probes.ProbeConfig(), seed: int = 0,
               log=None) -> probes.ClipProbe:
  clips = [c for a in sorted(train_actors) for c in ds.clips_of(a)]
  usable = [c for c in clips if c.motion and c.camera and c.yaws]
  if len(usable) < 8:
    raise raw.RawDataError(f"{ds.root}: {len(usable)} training clips with motion, camera and yaw "
                           "annotations (annotations.jsonl); the probes need at least 8")
  return probes.train([raw.read_video(c.video) for c in usable], [c.motion for c in usable],
                      [c.camera for c in usable], [c.yaws for c in usable], cfg, seed, log)


def _frames(n: int, count: int) -> np.ndarray:
  return np.round(np.linspace(0, n - 1, count)).astype(int)


class Scorer:
  """Reads clips once per path and scores them against the held-out actors' galleries."""

  def __init__(self, ds, net, probe, held_out):
    self.ds, self.net, self.probe = ds, net, probe
    self.frames = probe.cfg.frames
    self.gallery = {}
    for a in held_out:
      refs = ds.gallery(a)
      if not refs:
        raise raw.RawDataError(f"{ds.root}: actor {a} has no gallery renders")
      self.gallery[a] = (embedder.embed(net, np.stack([raw.read_image(r.path) for r in refs])),
                         np.array([r.yaw for r in refs]))
    self.gallery_embeddings = {a: e for a, (e, _) in self.gallery.items()}  # for retrieval
    self._videos = {}
    real = [raw.read_video(c.video) for a in held_out for c in ds.clips_of(a)]
    self.mean_layout = adherence.mean_layout(np.concatenate([v[_frames(len(v), 4)] for v in real]))

  def video(self, path: str) -> np.ndarray:
    if path not in self._videos:
      self._videos[path] = raw.read_video(path)
    return self._videos[path]

  def add_video(self, key: str, pixels: np.ndarray) -> str:
    """A clip made in memory (an autoencoded real clip), scored by KEY like a file."""
    self._videos[key] = pixels
    return key

  def reference_images(self, paths, size) -> np.ndarray:
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(raw.read_image(p)).resize(size[::-1],
                                                                         Image.BILINEAR))
                     for p in paths])

  def score(self, c: dict) -> dict:
    """c: {"condition", "target", "seed", "video", "source" (raw.Clip whose prompt it follows),
    "refs" ([(path, yaw)] given, or those the target would get)} -> one metric row."""
    pixels = self.video(c["video"])
    idx = _frames(len(pixels), self.frames)
    read = probes.predict(self.probe, [pixels])
    est_yaw = read["yaw"][0]
    emb = embedder.embed(self.net, pixels[idx])
    g_emb, g_yaw = self.gallery[c["target"]]
    sim = metrics.view_aware_similarity(emb, est_yaw, g_emb, g_yaw)
    source = c["source"]
    truth = self.video(source.video)
    want_yaw = probes.resample_yaws(source.yaws, self.frames)
    yaw_acc = adherence.yaw_accuracy(est_yaw, want_yaw)
    motion_ok, camera_ok = read["motion"][0] == source.motion, read["camera"][0] == source.camera
    ref_paths = [p for p, _ in c["refs"]]
    lay = lambda frames: adherence.layout_embedding(frames, self.mean_layout)
    ref_imgs = self.reference_images(ref_paths, pixels.shape[1:3])
    lock = adherence.pose_locking(est_yaw, want_yaw, [y for _, y in c["refs"]])
    row = {"condition": c["condition"], "target": c["target"], "seed": c["seed"],
           "video": c["video"], "source_video": source.video, "refs_given": c["given"],
           "refs": ref_paths,
           "similarity": {k: sim[k] for k in ("mean",) + metrics.VIEW_BINS},
           "retrieved": metrics.retrieve(emb, self.gallery_embeddings),
           "frame_index": idx.tolist(),
           "frame_retrieved": [a == c["target"]
                               for a in metrics.retrieve_each(emb, self.gallery_embeddings)],
           "frame_similarity": [float(v) for v in sim["per_frame"]],
           "identity_similarity": sim["mean"],
           "temporal_consistency": metrics.temporal_consistency(emb),
           "read": {"motion": read["motion"][0], "camera": read["camera"][0]},
           "motion_accuracy": float(motion_ok), "camera_accuracy": float(camera_ok),
           "yaw_accuracy": yaw_acc,
           "prompt_adherence": adherence.prompt_adherence(motion_ok, camera_ok, yaw_acc),
           "copy_paste": adherence.copy_paste(lay(pixels[idx]), lay(truth[_frames(len(truth),
                                                                                 self.frames)]),
                                              lay(ref_imgs)),
           "dynamic_degree": adherence.dynamic_degree(pixels, truth),
           "yaw_error": lock["yaw_error"], "yaw_to_reference": lock.get("to_reference"),
           "intended_yaw_to_reference": lock.get("intended_to_reference")}
    if self.ds.identities and self.ds.palettes and c["target"] in self.ds.identities:
      truth_attrs = attributes.true_attributes(self.ds.identities[c["target"]])
      row["attributes"] = attributes.accuracy(attributes.read_clip(pixels, self.ds.palettes),
                                              truth_attrs)
    return row


def _nan(v):
  return float("nan") if v is None else float(v)


def aggregate(rows: list[dict], seed: int = 0) -> dict:
  """{condition: {figure: {"mean", "ci95", "n", "groups"}}} over per-clip rows."""
  result = {}
  for cond in sorted({r["condition"] for r in rows}):
    rs = [r for r in rows if r["condition"] == cond]
    groups = [r["target"] for r in rs]
    ci = lambda values: bootstrap.mean_ci(values, groups, seed=seed)
    figures = {"retrieval_top1": ci([float(r["retrieved"] == r["target"]) for r in rs])}
    for name in FIGURES:
      figures[name] = ci([_nan(r.get(name)) for r in rs])
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


def identity_over_time(rows: list[dict], seed: int = 0) -> dict:
  """{condition: {"frame_index", "retrieval_top1", "identity_similarity"}}: per sampled frame of
  the clip (the same indices for every clip of the condition), the single frame's retrieval top-1
  and view-aware similarity, each {"mean": [...], "ci95": [[lo, hi], ...]} over clips with a
  bootstrap interval over identities. Where identity is lost along a clip: at once (the first
  generated frames) or by drift. Conditions whose clips differ in length are left out."""
  out = {}
  for cond in sorted({r["condition"] for r in rows}):
    rs = [r for r in rows if r["condition"] == cond and "frame_index" in r]
    if not rs or any(r["frame_index"] != rs[0]["frame_index"] for r in rs):
      continue
    groups = [r["target"] for r in rs]
    entry = {"frame_index": list(rs[0]["frame_index"])}
    for name, key in (("retrieval_top1", "frame_retrieved"),
                      ("identity_similarity", "frame_similarity")):
      per_frame = [bootstrap.mean_ci([float(r[key][i]) for r in rs], groups, seed=seed)
                   for i in range(len(entry["frame_index"]))]
      entry[name] = {"mean": [d["mean"] for d in per_frame], "ci95": [d["ci95"] for d in per_frame]}
    out[cond] = entry
  return out


def _source(ds, row) -> raw.Clip:
  src = row.get("source_video")
  match = [c for c in ds.clips if src is not None and c.video == fs.join(ds.root, src)]
  if not match:
    raise raw.RawDataError(f"generated clip {row['video']}: source_video {src!r} is not a clip of "
                           f"{ds.root} (the benchmark needs the clip whose prompt it followed)")
  if not (match[0].motion and match[0].camera and match[0].yaws):
    raise raw.RawDataError(f"{match[0].video}: no motion/camera/yaw annotations "
                           "(annotations.jsonl)")
  return match[0]


def clip_list(ds, generated_rows, held_out, max_faces: int = 2, max_bodies: int = 2) -> list[dict]:
  """The ground-truth clips of the held-out actors, then the generated ones, as Scorer inputs.
  A generated clip whose target is not held out is an error. Clips without references are
  scored for copy-paste against the references the target would get."""
  default = {a: [(p, y) for p, _, y in benchmark_references(ds, a, max_faces, max_bodies)]
             for a in held_out}
  clips = [{"condition": GROUND_TRUTH, "target": c.actor, "seed": 0, "video": c.video,
            "source": c, "refs": default[c.actor], "given": False}
           for a in held_out for c in ds.clips_of(a)]
  for r in generated_rows:
    t = target_actor(r)
    if t not in held_out:
      raise raw.RawDataError(f"generated clip {r['video']}: target actor {t} is not held out "
                             f"(held out: {', '.join(held_out)})")
    given = [(fs.join(ds.root, g["path"]), float(g["yaw"])) for g in r.get("refs") or []]
    clips.append({"condition": r["condition"], "target": t, "seed": int(r["seed"]),
                  "video": r["video"], "source": _source(ds, r),
                  "refs": given or default[t], "given": bool(given)})
  return clips


def fidelity(ds, net, videos: dict, held_out, seed: int = 0) -> dict:
  """Fréchet distance on embedder features: each condition's clips (videos: {condition: [uint8
  (T, H, W, 3)]}) vs half A of the real held-out frames, and half B vs half A (the reference
  value; halves split by clip). Too few held-out clips (< 4): the real frames of every actor are
  used."""
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
  out = {"real_split": split, "real_frames": int(len(feats)), "real_clips": int(len(real))}
  for cond, clips in videos.items():
    if clips:
      g = np.concatenate([embedder.embed_and_features(net, v)[1] for v in clips])
      out[cond] = fid.frechet_distance(g, feats[half_a])
  return out


def summary(per_condition: dict, chance: float, fidelity_result: dict | None) -> dict:
  """Flat, stable names: NAME and NAME_ci95 for every figure; the ground-truth condition's
  prompt adherence is also `prompt_adherence_real` (the ceiling)."""
  out = {"chance": chance, "chance_ci95": [chance, chance],
         "chance_prompt_adherence": adherence.CHANCE["prompt_adherence"]}
  for cond, figures in per_condition.items():
    for name, v in figures.items():
      if not isinstance(v, dict):
        continue
      key = RETRIEVAL_NAMES[cond] if name == "retrieval_top1" else f"{name}_{cond}"
      out[key], out[key + "_ci95"] = v["mean"], v["ci95"]
  if f"prompt_adherence_{GROUND_TRUTH}" in out:
    out["prompt_adherence_real"] = out[f"prompt_adherence_{GROUND_TRUTH}"]
    out["prompt_adherence_real_ci95"] = out[f"prompt_adherence_{GROUND_TRUTH}_ci95"]
  for k, v in (fidelity_result or {}).items():
    if k in ALL_CONDITIONS or k in ("real_split", AUTOENCODED):
      out[f"fidelity_{k}"] = v
  return out


def autoencoded_clips(scorer: Scorer, clips: list[dict], roundtrip) -> list[dict]:
  """The ground-truth entries again as the AUTOENCODED condition: each real clip through
  roundtrip (uint8 (T, H, W, 3) -> the same, encoded and decoded), scored against the same
  source, references and gallery."""
  out = []
  for c in clips:
    if c["condition"] == GROUND_TRUTH:
      key = scorer.add_video(f"{c['video']}#{AUTOENCODED}", roundtrip(scorer.video(c["video"])))
      out.append(dict(c, condition=AUTOENCODED, video=key))
  return out


def score(ds, net, probe, generated_rows, held_out, seed: int = 0, max_faces: int = 2,
          max_bodies: int = 2, roundtrip=None) -> dict:
  """Both axes of the benchmark over ground-truth and generated clips (and, with roundtrip, the
  ground truth encoded and decoded by the run's autoencoder: see autoencoded_clips)."""
  scorer = Scorer(ds, net, probe, held_out)
  clips = clip_list(ds, generated_rows, held_out, max_faces, max_bodies)
  if roundtrip is not None:
    clips += autoencoded_clips(scorer, clips, roundtrip)
  rows = [scorer.score(c) for c in clips]
  per_condition = aggregate(rows, seed)
  videos = {cond: [scorer.video(c["video"]) for c in clips if c["condition"] == cond]
            for cond in ALL_CONDITIONS + (AUTOENCODED,)}
  fidelity_result = (fidelity(ds, net, videos, held_out, seed)
                     if generated_rows or roundtrip is not None else None)
  chance = 1.0 / len(held_out)
  effect = reference_effect(rows, seed)
  out_summary = summary(per_condition, chance, fidelity_result)
  for name, d in effect.items():
    out_summary[f"reference_effect_{name}"] = d["mean"]
    out_summary[f"reference_effect_{name}_ci95"] = d["ci95"]
  return {"held_out_actors": list(held_out), "chance": chance,
          "chance_second_axis": adherence.CHANCE, "per_condition": per_condition,
          "reference_effect": effect, "fidelity": fidelity_result, "clips": rows,
          "identity_over_time": identity_over_time(rows, seed),
          "summary": out_summary}


def paired_keys(row: dict) -> tuple:
  return (row["condition"], row["target"], int(row["seed"]))


def compare(rows_a: list[dict], rows_b: list[dict], condition: str = "with_refs",
            seed: int = 0, condition_b: str | None = None) -> dict:
  """Paired differences B - A per figure over the clips both results share (same actor and seed;
  A's clips of `condition`, B's of `condition_b`, default the same), with a paired bootstrap
  interval over identities."""
  a = {paired_keys(r)[1:]: r for r in rows_a if r["condition"] == condition}
  b = {paired_keys(r)[1:]: r for r in rows_b if r["condition"] == (condition_b or condition)}
  keys = sorted(set(a) & set(b))
  if not keys:
    raise ValueError(f"no {condition} clips in common (same actor and seed) to compare")
  groups = [k[0] for k in keys]
  value = lambda r, name: (float(r["retrieved"] == r["target"]) if name == "retrieval_top1"
                           else _nan(r.get(name)))
  out = {}
  for name in ("retrieval_top1",) + FIGURES:
    out[name] = bootstrap.paired_difference([value(a[k], name) for k in keys],
                                            [value(b[k], name) for k in keys], groups, seed=seed)
  return out


# What the references change, within one result: with_refs - without_refs on the same actor,
# prompt, seed and noise (eval/generated.py samples both from one row), so the noise of the
# prompt and the seed cancels and a small identity effect is not lost in two wide intervals.
REFERENCE_EFFECT = ("retrieval_top1", "identity_similarity", "prompt_adherence", "copy_paste",
                    "dynamic_degree")


def reference_effect(rows: list[dict], seed: int = 0) -> dict:
  """{figure: {"mean", "ci95", ...}}: paired with_refs - without_refs; {} without both arms."""
  conds = {r["condition"] for r in rows}
  if not {"with_refs", "without_refs"} <= conds:
    return {}
  diff = compare(rows, rows, "without_refs", seed, condition_b="with_refs")
  return {k: diff[k] for k in REFERENCE_EFFECT}
