"""Generated clips for the benchmark: the folder layout, and producing it from a trained run.

A generated folder holds clips/*.mp4 and `generated.jsonl`, one row per clip:
  video        path relative to the folder
  condition    with_refs | without_refs | swapped
  actor_id     the actor whose prompt (and seed) the clip was generated from
  refs_actor   the actor whose references conditioned it (null for without_refs)
  seed         the sampling seed
  source_video the raw clip (relative to the raw folder) whose prompt was used: its motion,
               camera move and per-frame yaws are what the clip should show
  refs         the references given: [{"path" (relative to the raw folder), "type", "yaw"}]
A clip should look like `refs_actor` when it has references (swapped: actor A's prompt and seed
with actor B's references must retrieve B) and like `actor_id` otherwise.
"""
from __future__ import annotations

import json
import os

from wildactor_jax import fs
from wildactor_jax.eval.raw import RawDataError, RawDataset

INDEX = "generated.jsonl"
CONDITIONS = ("with_refs", "without_refs", "swapped")


def target_actor(row: dict) -> str:
  return row["actor_id"] if row["condition"] == "without_refs" else row["refs_actor"]


def load(folder: str) -> list[dict]:
  """The rows of FOLDER/generated.jsonl with `video` made a full path; one-line errors."""
  index = fs.join(folder, INDEX)
  if not fs.exists(index):
    raise RawDataError(f"{index}: missing (expected the generated clips' index)")
  rows = []
  for n, line in enumerate(fs.read_text(index).splitlines(), 1):
    if not line.strip():
      continue
    where = f"{index}:{n}"
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise RawDataError(f"{where}: not valid JSON ({e.msg})") from None
    for field in ("video", "condition", "actor_id", "seed"):
      if field not in row:
        raise RawDataError(f"{where}: missing field {field!r}")
    if row["condition"] not in CONDITIONS:
      raise RawDataError(f"{where}: condition {row['condition']!r}, expected one of {CONDITIONS}")
    if row["condition"] != "without_refs" and not row.get("refs_actor"):
      raise RawDataError(f"{where}: condition {row['condition']} needs refs_actor")
    row = dict(row, video=fs.join(folder, row["video"]))
    if not fs.exists(row["video"]):
      raise RawDataError(f"{where}: video {row['video']}: no such file")
    rows.append(row)
  if not rows:
    raise RawDataError(f"{index}: no rows")
  return rows


def roundtrip(vae):
  """pixels uint8 (T, H, W, 3) -> the same clip encoded and decoded by VAE (any of the project's
  autoencoders), uint8, T frames: a clip of other than 1 + 4k frames is padded with its last frame
  for the causal temporal groups and cut back after decoding."""
  import jax
  import numpy as np
  from wildactor_jax import media
  t_factor, s_factor = int(vae.temporal_factor), int(vae.spatial_factor)

  def run(pixels: np.ndarray) -> np.ndarray:
    t, h, w = pixels.shape[:3]
    if h % s_factor or w % s_factor:
      raise RawDataError(f"a {h}x{w} clip: the autoencoder needs sides divisible by {s_factor}")
    pad = (-(t - 1)) % t_factor
    x = np.concatenate([pixels, np.repeat(pixels[-1:], pad, axis=0)]).astype(np.float32)
    y = vae.decode(vae.encode(jax.numpy.asarray(x / 127.5 - 1.0)[None]))
    return media.to_uint8(np.asarray(y, np.float32)[0, :t])
  return run


def benchmark_references(ds: RawDataset, actor: str, max_faces: int,
                         max_bodies: int) -> list[tuple[str, int, float]]:
  """The actor's neutral-pose view renders closest to 0, 90, 180, 45 degrees (spread over views),
  up to the counts: [(path, type, yaw)] with faces (type 0) first: what the benchmark gives."""
  from wildactor_jax.eval.metrics import angular_distance
  out = []
  for region, kind, limit in (("face", 0, max_faces), ("body", 1, max_bodies)):
    pool = list(ds.references(actor, region))
    for want in (0.0, 90.0, 180.0, 45.0)[:limit]:
      if not pool:
        break
      best = min(pool, key=lambda r: (float(angular_distance(r.yaw, want)), r.path))
      pool.remove(best)
      out.append((best.path, kind, best.yaw))
  return out


def generate(workdir: str, ds: RawDataset, actors: list[str], seeds, folder: str,
             steps: int | None = None, log=print, batch: int = 12) -> list[dict]:
  """Generates every held-out actor under every condition and seed with the run's newest
  checkpoint and writes FOLDER (clips + generated.jsonl, the index last). Seed s uses the
  actor's clip s mod (its clip count) as prompt source. Clips are sampled `batch` at a time
  (inference.generate_batch: each clip as it would come out alone)."""
  from wildactor_jax import inference, media
  from wildactor_jax.infer import encoders, load_run
  from wildactor_jax.infer.settings import settings_from_config
  if len(actors) < 2:
    raise ValueError(f"{len(actors)} held-out actors: swapped references need at least 2")
  run = load_run(workdir)
  config, model = run.config, run.model
  vae, text = encoders.vae_from_config(config), encoders.text_encoder_from_config(config)
  s = settings_from_config(config, steps=steps)
  max_faces = int(config.data.get("max_faces", 2))
  max_bodies = int(config.data.get("max_bodies", 2))
  refs, given = {}, {}
  for a in actors:
    chosen = benchmark_references(ds, a, max_faces, max_bodies)
    refs[a] = ([media.load_reference(p, s.height, s.width, "reference") for p, _, _ in chosen],
               [t for _, t, _ in chosen])
    given[a] = [{"path": os.path.relpath(p, ds.root), "type": t, "yaw": y} for p, t, y in chosen]
  rows = []
  for i, actor in enumerate(actors):
    partner = actors[(i + 1) % len(actors)]
    clips = ds.clips_of(actor)
    for seed in seeds:
      clip = clips[seed % len(clips)]
      for condition, ref_actor in (("with_refs", actor), ("without_refs", None),
                                   ("swapped", partner)):
        rows.append({"video": f"clips/{actor}_{condition}_s{seed}.mp4", "condition": condition,
                     "actor_id": actor, "refs_actor": ref_actor, "seed": int(seed),
                     "source_video": os.path.relpath(clip.video, ds.root),
                     "refs": given[ref_actor] if ref_actor else [], "prompt": clip.prompt})
  for lo in range(0, len(rows), batch):
    part = rows[lo:lo + batch]
    with run.sharding():
      videos = inference.generate_batch(
          model, vae, text, [r["prompt"] for r in part],
          [refs[r["refs_actor"]][0] if r["refs_actor"] else [] for r in part],
          [refs[r["refs_actor"]][1] if r["refs_actor"] else [] for r in part], s,
          [r["seed"] for r in part])
    for r, video in zip(part, videos):
      media.write_mp4(os.path.join(folder, r["video"]), media.to_uint8(video), fps=8)
    log(f"  generated {min(lo + batch, len(rows))} of {len(rows)} clips")
  fs.atomic_write_text(fs.join(folder, INDEX), "".join(json.dumps(r) + "\n" for r in rows))
  return load(folder)
