"""Synthetic multi-view actor dataset in the public Actor-18M schema (CPU only, deterministic).

  python data/synthetic_actors.py --out DIR --actors N --clips-per-actor K --seed S \
      [--size 128 --frames 17 --fps 8 --workers 2 --background plain|scene --describe-appearance]

Writes into DIR (built in a sibling temp folder, renamed into place when complete):
  manifest.jsonl      one row per clip, exactly the Actor-18M schema (docs/method.md s.3)
  annotations.jsonl   per clip: motion, camera move and the true yaw of every frame
  clips/<actor>_c<k>.mp4                       H.264, size x size, `frames` frames at `fps`
  refs/<actor>/face_y<yaw>.png, body_y<yaw>.png  clean-background view renders (view_aug)
  refs/<actor>/three_view.png                  front/side/back sheet (region three_view)
  refs/<actor>_c<k>_{face,body}_f<frame>.png   crops from the clip's own frames (self_crop)

Every actor is one fixed `render_actor.Identity`; every clip one motion (walk, wave, turn, jump)
under one camera move (orbit, pan, zoom). `angle` is the subject's yaw relative to the camera
(render_actor's convention), `view` its label, `visibility` the fraction of the crop box inside
the frame (times how much of the face is turned to the camera, for faces). Three-view sheets
carry angle 0 and view "canonical". Output depends only on the arguments (each actor and clip
has its own seeded generator), not on --workers.

Identity lives in the references only, by default: prompts describe the motion and the camera
("A person walks in place while the camera pans sideways."), never the appearance, and the figure
stands large in the frame on a controlled background (`plain`: the same grey wall and floor in
every clip), so the only way to get an actor's colours right is to read them off the references.
`--describe-appearance` writes the old prompts that spell out the whole appearance (the
text-identity ablation); `--background scene` the old random sky/ground/blocks scenes.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render_actor as ra  # noqa: E402  (sibling module; this file also runs as a script)
from wildactor_jax import media  # noqa: E402

CAMERAS = ("orbit", "pan", "zoom")
FACE_YAWS = (0, 30, -30, 60, -60, 90, -90)
BODY_YAWS = (0, 45, -45, 90, -90, 180)
SUPERSAMPLE = 2  # render at 2x and box-filter down: cheap anti-aliasing
MOTION_TEXT = {"walk": "walks in place", "wave": "waves with the right hand",
               "turn": "turns around slowly", "jump": "jumps up and down"}
PLAIN_WALL, PLAIN_FLOOR, PLAIN_HORIZON = (196, 196, 200), (140, 140, 146), 0.64
CAMERA_TEXT = {"orbit": "the camera orbits around them", "pan": "the camera pans sideways",
               "zoom": "the camera zooms"}


def actor_id(index: int) -> str:
  return f"a{index:04d}"


def actor_identity(seed: int, index: int) -> ra.Identity:
  return ra.sample_identity(np.random.default_rng([seed, index, 0]))


def _plain_background(width: int, height: int) -> Image.Image:
  """The controlled background: one wall and one floor colour, the same in every clip."""
  img = np.empty((height, width, 3), np.uint8)
  horizon = int(PLAIN_HORIZON * height)
  img[:horizon], img[horizon:] = PLAIN_WALL, PLAIN_FLOOR
  return Image.fromarray(img)


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
  """A wide sky/ground strip with blocks on the horizon; camera moves slide a window over it."""
  sky_top, sky_bot = rng.uniform(120, 255, 3), rng.uniform(150, 255, 3)
  ground = rng.uniform(40, 170, 3)
  horizon = int(0.56 * height)
  f = np.linspace(0.0, 1.0, horizon)[:, None]
  img = np.empty((height, width, 3), np.float32)
  img[:horizon] = (sky_top * (1 - f) + sky_bot * f)[:, None, :]
  img[horizon:] = ground
  for _ in range(int(rng.integers(6, 14))):
    w = int(rng.uniform(0.04, 0.12) * width)
    h = int(rng.uniform(0.1, 0.4) * height)
    x = int(rng.integers(0, width - w))
    img[horizon - h:horizon, x:x + w] = rng.uniform(30, 230, 3)
  return Image.fromarray(img.astype(np.uint8))


def _ref_row(path: str, region: str, angle: float, visibility: float, source: str,
             frame: int = -1) -> dict:
  view = "canonical" if region == "three_view" else ra.view_label(angle)
  return {"path": path, "region": region, "view": view, "angle": round(float(angle), 2),
          "visibility": round(float(visibility), 3), "source_frame": int(frame),
          "metadata": {"source": source}}


def render_actor_refs(job: tuple) -> list[dict]:
  """view_aug face/body renders on a clean background plus the canonical three-view sheet."""
  root, seed, index, size = job
  ident, aid = actor_identity(seed, index), actor_id(index)
  os.makedirs(os.path.join(root, "refs", aid), exist_ok=True)
  side = size * SUPERSAMPLE
  refs = []
  for region, yaws in (("face", FACE_YAWS), ("body", BODY_YAWS)):
    for yaw in yaws:
      img = Image.new("RGB", (side, side), (235, 235, 235))
      boxes = ra.draw_figure(img, ident, ra.Pose(), ra.View(yaw, side / 2, side * 0.95, side * 0.85))
      crop, _ = ra.square_crop(img, boxes[region], size, fill=(235, 235, 235))
      rel = f"refs/{aid}/{region}_y{yaw:+04d}.png"
      crop.save(os.path.join(root, rel))
      refs.append(_ref_row(rel, region, yaw, 1.0, "view_aug"))
  sheet = Image.new("RGB", (3 * side, 2 * side), (255, 255, 255))
  for k, yaw in enumerate((0, 90, 180)):  # front, side, back
    ra.draw_figure(sheet, ident, ra.Pose(), ra.View(yaw, side * (0.5 + k), side * 1.9, side * 1.6))
  rel = f"refs/{aid}/three_view.png"
  sheet.resize((3 * size // 2, size), Image.BILINEAR).save(os.path.join(root, rel))
  refs.append(_ref_row(rel, "three_view", 0.0, 1.0, "canonical"))
  return refs


# Per background: (pan, zoom, figure scale, foot x) ranges and the foot line. On the plain
# background the figure fills most of the frame and camera moves stay gentle.
PLAN_RANGES = {"plain": ((0.1, 0.2), (1.1, 1.2), (0.72, 0.8), (0.45, 0.55), 0.94),
               "scene": ((0.2, 0.4), (1.3, 1.7), (0.6, 0.75), (0.4, 0.6), 0.9)}


def _clip_plan(rng: np.random.Generator, background: str) -> dict:
  pan, zoom, scale, x, foot = PLAN_RANGES[background]
  frontal = rng.random() < 0.6   # in-the-wild footage is mostly frontal; keep that bias
  return {"motion": str(rng.choice(ra.MOTIONS)), "camera": str(rng.choice(CAMERAS)),
          "base_yaw": float(rng.normal(0, 15) if frontal else rng.uniform(-180, 180)),
          "cycles": float(rng.uniform(0.8, 2.0)), "amplitude": float(rng.uniform(0.35, 0.6)),
          "turn": float(rng.choice([-1, 1]) * rng.uniform(120, 300)),
          "sweep": float(rng.choice([-1, 1]) * rng.uniform(60, 180)),
          "pan": float(rng.choice([-1, 1]) * rng.uniform(*pan)),
          "zoom": float(rng.uniform(*zoom) ** rng.choice([-1, 1])),
          "scale": float(rng.uniform(*scale)), "x": float(rng.uniform(*x)),
          "foot": foot, "background": background}


def _camera_at(plan: dict, t: float, side: int) -> tuple[float, float, float, float]:
  """(camera azimuth deg, figure foot x px, zoom factor, background offset px) at time t."""
  azimuth, foot_x, zoom = 0.0, plan["x"] * side, 1.0
  if plan["camera"] == "orbit":
    azimuth = plan["sweep"] * t
  elif plan["camera"] == "pan":
    foot_x -= plan["pan"] * side * (t - 0.5)
  else:
    zoom = plan["zoom"] ** t
  # The background is far away: it slides with the orbit and a little less than the figure on pans.
  offset = azimuth / 360.0 * side + (0.6 * plan["pan"] * side * t if plan["camera"] == "pan" else 0)
  return azimuth, foot_x, zoom, offset


def render_clip(job: tuple) -> tuple[dict, dict]:
  """Renders one clip; returns (manifest row without actor refs, annotation row)."""
  root, seed, index, clip, size, frames, fps, background, describe = job
  ident, aid = actor_identity(seed, index), actor_id(index)
  rng = np.random.default_rng([seed, index, clip + 1])
  plan = _clip_plan(rng, background)
  side = size * SUPERSAMPLE
  bg = (_plain_background(3 * side, 2 * side) if background == "plain"  # room to pan and zoom out
        else _background(rng, 3 * side, 2 * side))
  name = f"{aid}_c{clip:02d}"
  crop_frames = sorted({0, frames // 2, frames - 1})
  pixels, yaws, refs = [], [], []
  for f in range(frames):
    t = f / max(1, frames - 1)
    pose = ra.motion_pose(plan["motion"], t, plan)
    azimuth, foot_x, zoom, offset = _camera_at(plan, t, side)
    win = side / zoom
    x0 = 1.5 * side + offset - win / 2
    y0 = side - win / 2
    img = bg.crop((int(x0), int(y0), int(x0 + win), int(y0 + win))).resize((side, side),
                                                                          Image.BILINEAR)
    yaw = ra.wrap_angle(plan["base_yaw"] + pose.body_yaw - azimuth)
    foot_y = side / 2 + (plan["foot"] * side - side / 2) * zoom
    foot_x = side / 2 + (foot_x - side / 2) * zoom
    boxes = ra.draw_figure(img, ident, pose, ra.View(yaw, foot_x, foot_y, side * plan["scale"] * zoom))
    yaws.append(round(yaw, 2))
    if f in crop_frames:
      for region in ("face", "body"):
        crop, vis = ra.square_crop(img, boxes[region], size)
        if region == "face":  # a face turned away is not a visible face
          vis *= float(np.clip((math.cos(math.radians(yaw)) + 0.3) / 1.3, 0.0, 1.0))
        rel = f"refs/{name}_{region}_f{f:03d}.png"
        crop.save(os.path.join(root, rel))
        refs.append(_ref_row(rel, region, yaw, vis, "self_crop", f))
    pixels.append(np.asarray(img.reduce(SUPERSAMPLE)))
  video = f"clips/{name}.mp4"
  media.write_mp4(os.path.join(root, video), pixels, fps)
  prompt = clip_prompt(ident, plan, describe)
  row = {"video": video, "prompt": prompt, "actor_id": aid, "source": "synthetic",
         "width": size, "height": size, "duration_sec": round(frames / fps, 3), "refs": refs}
  note = {"video": video, "motion": plan["motion"], "camera": plan["camera"], "yaw": yaws}
  return row, note


def clip_prompt(ident: ra.Identity, plan: dict, describe_appearance: bool = False) -> str:
  """Motion and camera in words; the actor's appearance only for the text-identity ablation."""
  who = ident.describe() if describe_appearance else "a person"
  zoom = (" in" if plan["zoom"] > 1 else " out") if plan["camera"] == "zoom" else ""
  return (f"{who[0].upper()}{who[1:]} {MOTION_TEXT[plan['motion']]} while "
          f"{CAMERA_TEXT[plan['camera']]}{zoom}.")


def generate(out: str, actors: int, clips_per_actor: int, seed: int, size: int = 128,
             frames: int = 17, fps: int = 8, workers: int = 2, background: str = "plain",
             describe_appearance: bool = False) -> int:
  """Writes the dataset to `out` (must not exist or be empty); returns the number of clips."""
  if os.path.exists(out) and os.listdir(out):
    raise FileExistsError(f"{out}: exists and is not empty; refusing to overwrite")
  tmp = os.path.join(os.path.dirname(os.path.abspath(out)),
                     f".{os.path.basename(os.path.abspath(out))}.tmp-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(os.path.join(tmp, "clips"))
  os.makedirs(os.path.join(tmp, "refs"))
  try:
    ref_jobs = [(tmp, seed, a, size) for a in range(actors)]
    clip_jobs = [(tmp, seed, a, c, size, frames, fps, background, describe_appearance)
                 for a in range(actors)
                 for c in range(clips_per_actor)]
    if workers > 1:
      with multiprocessing.get_context("fork").Pool(workers) as pool:
        actor_refs = pool.map(render_actor_refs, ref_jobs)
        clips = pool.map(render_clip, clip_jobs, chunksize=4)
    else:
      actor_refs = [render_actor_refs(j) for j in ref_jobs]
      clips = [render_clip(j) for j in clip_jobs]
    with open(os.path.join(tmp, "manifest.jsonl"), "w") as manifest, \
         open(os.path.join(tmp, "annotations.jsonl"), "w") as notes:
      for (row, note), job in zip(clips, clip_jobs):
        row["refs"] = row["refs"] + actor_refs[job[2]]
        manifest.write(json.dumps(row) + "\n")
        notes.write(json.dumps(note) + "\n")
    if os.path.exists(out):
      os.rmdir(out)  # empty (checked above)
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return len(clips)


def _positive(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
  return value


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--actors", type=_positive, required=True)
  parser.add_argument("--clips-per-actor", type=_positive, required=True)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--size", type=_positive, default=128, help="even, square frame side (px)")
  parser.add_argument("--frames", type=_positive, default=17, help="frames per clip (1 + 4k)")
  parser.add_argument("--fps", type=_positive, default=8)
  parser.add_argument("--workers", type=_positive, default=min(2, os.cpu_count() or 1))
  parser.add_argument("--background", choices=("plain", "scene"), default="plain",
                      help="plain: one controlled wall/floor; scene: random sky, ground, blocks")
  parser.add_argument("--describe-appearance", action="store_true",
                      help="prompts spell out the actor's appearance (text-identity ablation)")
  args = parser.parse_args(argv)
  if args.size % 2 or args.size < 16:
    parser.error(f"--size {args.size}: expected an even number >= 16 (H.264 needs even sides)")
  if (args.frames - 1) % 4:
    parser.error(f"--frames {args.frames}: expected 1 + 4k (the VAE groups frames in fours)")
  try:
    n = generate(args.out, args.actors, args.clips_per_actor, args.seed, args.size, args.frames,
                 args.fps, args.workers, args.background, args.describe_appearance)
  except FileExistsError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(json.dumps({"clips": n, "actors": args.actors, "out": args.out}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
