"""Generated clips for the benchmark: the folder layout, and producing it from a trained run.

A generated folder holds clips/*.mp4 and `generated.jsonl`, one row per clip:
  video        path relative to the folder
  condition    with_refs | without_refs | swapped | first_frame (a diagnostic, on request:
               the actor's references AND the source clip's own first latent frame, clean; the
               clip is the frozen backbone continuing the true frame, so it bounds what the
               references alone can give)
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

import numpy as np

from wildactor_jax import fs
from wildactor_jax.eval.raw import RawDataError, RawDataset

INDEX = "generated.jsonl"
CONDITIONS = ("with_refs", "without_refs", "swapped")
FIRST_FRAME = "first_frame"
ALL_CONDITIONS = CONDITIONS + (FIRST_FRAME,)


def target_actor(row: dict) -> str:
  return row["actor_id"] if row["condition"] == "without_refs" else row["refs_actor"]


def load(folder: str) -> list[dict]:
  """The rows of FOLDER/generated.jsonl with `video` made a full path; one-line errors."""
  index = fs.join(folder, INDEX)
  if not fs.exists(index):
    raise RawDataError(f"{index}: missing (expected the generated clips' index)")
  rows = []
  for where, row in fs.read_json_lines(index, RawDataError):
    for field in ("video", "condition", "actor_id", "seed"):
      if field not in row:
        raise RawDataError(f"{where}: missing field {field!r}")
    if row["condition"] not in ALL_CONDITIONS:
      raise RawDataError(f"{where}: condition {row['condition']!r}, expected one of "
                         f"{ALL_CONDITIONS}")
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


def first_latent_frame(vae, video_path: str, height: int, width: int) -> np.ndarray:
  """The clip's first frame encoded alone by the run's autoencoder, (1, H', W', C): a causal
  autoencoder's first latent frame stands for the first pixel frame alone, as a continuation
  re-encodes the frames it continues from (infer/continuation.py)."""
  from wildactor_jax.infer.continuation import load_context
  frames, _ = load_context(video_path, vae, height, width, what="source clip")
  return np.asarray(vae.encode(frames[:1][None]), np.float32)[0]


def generate(workdir: str, ds: RawDataset, actors: list[str], seeds, folder: str,
             steps: int | None = None, log=print, batch: int = 12,
             first_frame: bool = False) -> list[dict]:
  """Generates every held-out actor under every condition and seed with the run's newest
  checkpoint and writes FOLDER (clips + generated.jsonl, the index last). Seed s uses the
  actor's clip s mod (its clip count) as prompt source. Clips are sampled `batch` at a time
  (inference.generate_batch: each clip as it would come out alone). first_frame: also the
  FIRST_FRAME diagnostic (with_refs continued from the source clip's own first frame)."""
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
      conditions = [("with_refs", actor), ("without_refs", None), ("swapped", partner)]
      for condition, ref_actor in conditions + ([(FIRST_FRAME, actor)] if first_frame else []):
        rows.append({"video": f"clips/{actor}_{condition}_s{seed}.mp4", "condition": condition,
                     "actor_id": actor, "refs_actor": ref_actor, "seed": int(seed),
                     "source_video": os.path.relpath(clip.video, ds.root),
                     "refs": given[ref_actor] if ref_actor else [], "prompt": clip.prompt})
  # Batches never mix clips with and without a clean first frame (one sampler shape each).
  plain = [r for r in rows if r["condition"] != FIRST_FRAME]
  batches = [plain[lo:lo + batch] for lo in range(0, len(plain), batch)]
  continued = [r for r in rows if r["condition"] == FIRST_FRAME]
  batches += [continued[lo:lo + batch] for lo in range(0, len(continued), batch)]
  done = 0
  for part in batches:
    context = None
    if part[0]["condition"] == FIRST_FRAME:
      context = np.stack([first_latent_frame(vae, os.path.join(ds.root, r["source_video"]),
                                             s.height, s.width) for r in part])
    with run.sharding():
      videos = inference.generate_batch(
          model, vae, text, [r["prompt"] for r in part],
          [refs[r["refs_actor"]][0] if r["refs_actor"] else [] for r in part],
          [refs[r["refs_actor"]][1] if r["refs_actor"] else [] for r in part], s,
          [r["seed"] for r in part], context)
    for r, video in zip(part, videos):
      media.write_mp4(os.path.join(folder, r["video"]), media.to_uint8(video), fps=8)
    done += len(part)
    log(f"  generated {done} of {len(rows)} clips")
  fs.atomic_write_text(fs.join(folder, INDEX), "".join(json.dumps(r) + "\n" for r in rows))
  return load(folder)
