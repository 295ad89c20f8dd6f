"""Synthetic multi-view actor dataset in the public Actor-18M schema (CPU only, deterministic).

  python data/synthetic_actors.py --out DIR --actors N --clips-per-actor K --seed S \
      [--size 64 --frames 17 --fps 8 --workers 2 --background plain|scene
       --describe-appearance | --describe-fraction P]

Writes into DIR (built in a sibling temp folder, renamed into place when complete):
  manifest.jsonl      one row per clip, exactly the Actor-18M schema (docs/method.md s.3)
  annotations.jsonl   per clip: motion, camera move, start view, the true yaw of every frame and
                      the figure's body box in every frame (`body_box`: [x0, y0, x1, y1] as
                      fractions of the frame; the person-weighted loss's boxes, see encode.py)
  actors.jsonl        per actor: its identity (colours, pattern, proportions), for attribute scoring
  palettes.json       the RGB values of the colour names (attribute scoring reads colours by them)
  vocabulary.json     every word any prompt of this generator can contain (the demo's tokenizer)
  gallery.jsonl       per actor: evaluation-only body renders (never a reference, never trained on
                      by the generator): the benchmark's identity gallery
  clips/<actor>_c<k>.mp4                 H.264, size x size, `frames` frames at `fps`
  refs/<actor>/face_y<yaw>.png           face close-ups, neutral pose (view_aug)
  refs/<actor>/body_y<yaw>.png           full body, neutral pose, centred (view_aug)
  refs/<actor>/body_pose<k>.png          full body in a pose of some motion, at any view, scale
                                         and position in the crop (view_aug)
  refs/<actor>/body_scene<k>.png         the same on a random outdoor scene (attr_aug)
  refs/<actor>/three_view.png            front/side/back sheet (region three_view)
  refs/<actor>_c<k>_{face,body}_f<frame>.png   crops from clip k's frames (self_crop); a clip's
                                         row lists the crops of the actor's OTHER clips only
  gallery/<actor>/body_<k>.png           the gallery renders

References unlike the video (as in Actor-18M): a clip never gets crops of its own frames, and the
renders show the actor in other poses, views, scales and positions than the clip, so pasting a
reference by position is visibly wrong. Clips move: the figure walks across the frame (toward,
away, left or right, as it faces), turns around, and the camera orbits, pans or zooms over a wall
with fixed panels (so camera moves show in the background); the figure's scale and place vary
from clip to clip. Every actor is one fixed `render_actor.Identity`.

Prompts say what the clip does and nothing of the appearance, by default: the start view, the
motion and the camera move with their directions ("A person facing left walks to the left while
the camera pans right."); `--describe-appearance` prefixes the whole appearance (the
text-identity ablation), `--describe-fraction P` does so for a random share P of the clips (a
pre-training corpus whose captions sometimes describe the person, as web captions do);
`--background scene` uses random sky/ground/block scenes instead of the controlled wall.
`angle` is the subject's yaw relative to the camera (render_actor's convention), `view` its
label, `visibility` the fraction of the crop box inside the frame (times how much of the face is
turned to the camera, for faces). Output depends only on the arguments (each actor and clip has
its own seeded generator), not on --workers.
"""
from __future__ import annotations

import argparse
import dataclasses
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
POSE_REFS, SCENE_REFS, GALLERY_VIEWS = 4, 2, 8
SUPERSAMPLE = 2  # render at 2x and box-filter down: cheap anti-aliasing
REF_BACKGROUND = (235, 235, 235)
# A clip's figure height as a fraction of the frame side, drawn uniformly at the clip's start
# (walking toward the camera and zooming in make it larger as the clip goes on).
FIGURE_SCALE = (0.45, 0.72)
# Start views: in-the-wild footage is mostly frontal; keep that bias (weights) with every side.
START_VIEWS = {"front": 0.0, "left": 90.0, "right": -90.0, "back": 180.0}
START_WEIGHTS = (0.4, 0.2, 0.2, 0.2)
VIEW_TEXT = {"front": "facing the camera", "left": "facing left", "right": "facing right",
             "back": "with their back to the camera"}
WALK_TEXT = {"front": "walks toward the camera", "left": "walks to the left",
             "right": "walks to the right", "back": "walks away from the camera"}
TURN_DEGREES, ORBIT_DEGREES = 180.0, 90.0
PLAIN_WALL, PLAIN_FLOOR, PLAIN_HORIZON = (196, 196, 200), (140, 140, 146), 0.64
PANEL = (168, 170, 178)  # the wall's fixed panels: a pan or orbit moves them across the frame


def actor_id(index: int) -> str:
  return f"a{index:04d}"


def actor_identity(seed: int, index: int) -> ra.Identity:
  return ra.sample_identity(np.random.default_rng([seed, index, 0]))


def _plain_background(side: int) -> Image.Image:
  """The controlled background, the same in every clip: a wall with evenly spaced panels above a
  floor, on a 3 x 2 canvas of frame sides whose middle (rows side/2 .. 3 side/2) is the frame at
  zoom 1. No identity in it, but camera moves slide and scale the panels in the frame."""
  img = np.empty((2 * side, 3 * side, 3), np.uint8)
  top = side // 2
  horizon = top + int(PLAIN_HORIZON * side)
  img[:horizon], img[horizon:] = PLAIN_WALL, PLAIN_FLOOR
  step = side // 3
  for k in range(9):
    x0 = k * step + step // 4
    img[top + int(0.2 * side):top + int(0.5 * side), x0:x0 + step // 3] = PANEL
  return Image.fromarray(img)


def _scene_background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
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
             frame: int = -1, pose: str = "varied") -> dict:
  """A manifest reference; metadata.pose says whether the actor stands in the neutral pose (the
  clean view renders the benchmark gives as references) or in some other."""
  view = "canonical" if region == "three_view" else ra.view_label(angle)
  return {"path": path, "region": region, "view": view, "angle": round(float(angle), 2),
          "visibility": round(float(visibility), 3), "source_frame": int(frame),
          "metadata": {"source": source, "pose": pose}}


def _random_pose(rng: np.random.Generator) -> ra.Pose:
  """A pose from one of the motions at a random instant (references in other poses)."""
  plan = {"cycles": 1.0, "amplitude": float(rng.uniform(0.35, 0.6))}
  return ra.motion_pose(str(rng.choice(ra.MOTIONS)), float(rng.random()), plan)


def _posed_body(ident: ra.Identity, rng: np.random.Generator, side: int, yaw: float,
                background: Image.Image | None, size: int) -> Image.Image:
  """The actor in a random pose at `yaw`, at a random scale and place inside a square crop."""
  img = background.copy() if background is not None else Image.new("RGB", (side, side),
                                                                    REF_BACKGROUND)
  scale = side * float(rng.uniform(0.5, 0.85))
  foot_x = side * float(rng.uniform(0.35, 0.65))
  foot_y = side * float(rng.uniform(0.8, 0.97))
  ra.draw_figure(img, ident, _random_pose(rng), ra.View(yaw, foot_x, foot_y, scale))
  return img.resize((size, size), Image.BILINEAR)


def render_actor_refs(job: tuple) -> tuple[list[dict], list[dict]]:
  """The actor's references (view_aug, attr_aug, canonical) and its gallery renders:
  -> (manifest ref rows, gallery rows)."""
  root, seed, index, size = job
  ident, aid = actor_identity(seed, index), actor_id(index)
  rng = np.random.default_rng([seed, index, 1_000_000])
  os.makedirs(os.path.join(root, "refs", aid), exist_ok=True)
  os.makedirs(os.path.join(root, "gallery", aid), exist_ok=True)
  side = size * SUPERSAMPLE
  refs = []
  for region, yaws in (("face", FACE_YAWS), ("body", BODY_YAWS)):
    for yaw in yaws:
      img = Image.new("RGB", (side, side), REF_BACKGROUND)
      view = ra.View(yaw, side / 2, side * 0.95, side * 0.85)
      boxes = ra.draw_figure(img, ident, ra.Pose(), view)
      crop, _ = ra.square_crop(img, boxes[region], size, fill=REF_BACKGROUND)
      rel = f"refs/{aid}/{region}_y{yaw:+04d}.png"
      crop.save(os.path.join(root, rel))
      refs.append(_ref_row(rel, region, yaw, 1.0, "view_aug", pose="neutral"))
  for k in range(POSE_REFS + SCENE_REFS):
    yaw = ra.wrap_angle(float(rng.uniform(-180, 180)))
    scene = k >= POSE_REFS
    bg = _scene_background(rng, side, side) if scene else None
    rel = (f"refs/{aid}/body_scene{k - POSE_REFS}.png" if scene else f"refs/{aid}/body_pose{k}.png")
    _posed_body(ident, rng, side, yaw, bg, size).save(os.path.join(root, rel))
    refs.append(_ref_row(rel, "body", yaw, 1.0, "attr_aug" if scene else "view_aug"))
  sheet = Image.new("RGB", (3 * side, 2 * side), (255, 255, 255))
  for k, yaw in enumerate((0, 90, 180)):  # front, side, back
    ra.draw_figure(sheet, ident, ra.Pose(), ra.View(yaw, side * (0.5 + k), side * 1.9, side * 1.6))
  rel = f"refs/{aid}/three_view.png"
  sheet.resize((3 * size // 2, size), Image.BILINEAR).save(os.path.join(root, rel))
  refs.append(_ref_row(rel, "three_view", 0.0, 1.0, "canonical", pose="neutral"))
  gallery = []
  for k in range(GALLERY_VIEWS):  # evenly spread views, each in its own pose, scale and place
    yaw = ra.wrap_angle(360.0 * k / GALLERY_VIEWS + float(rng.uniform(-15, 15)))
    rel = f"gallery/{aid}/body_{k}.png"
    _posed_body(ident, rng, side, yaw, None, size).save(os.path.join(root, rel))
    gallery.append({"actor_id": aid, "path": rel, "region": "body", "angle": round(yaw, 2)})
  return refs, gallery


@dataclasses.dataclass(frozen=True)
class ClipPlan:
  """What one clip does: the prompt is written from these fields, the frames rendered from them."""
  motion: str          # render_actor.MOTIONS
  camera: str          # CAMERAS
  start_view: str      # START_VIEWS key
  start_yaw: float     # degrees, near the start view's centre
  direction: float     # +1 / -1: turn, orbit and pan direction; zoom in (+1) or out (-1)
  cycles: float        # motion cycles over the clip
  amplitude: float     # motion amplitude
  scale: float         # figure height as a fraction of the frame side
  x: float             # figure's start foot position, fraction of the frame width
  foot: float          # foot line, fraction of the frame height
  background: str      # plain | scene


def clip_plan(rng: np.random.Generator, background: str,
              figure_scale: tuple[float, float] = FIGURE_SCALE) -> ClipPlan:
  view = str(rng.choice(list(START_VIEWS), p=START_WEIGHTS))
  motion, camera = str(rng.choice(ra.MOTIONS)), str(rng.choice(CAMERAS))
  direction = float(rng.choice([-1.0, 1.0]))
  scale = float(rng.uniform(*figure_scale))
  if camera == "zoom" and direction > 0:  # zooming in by 1.5 must keep the head in the frame
    scale /= 1.35
  return ClipPlan(
      motion=motion, camera=camera, start_view=view,
      start_yaw=float(START_VIEWS[view] + rng.normal(0.0, 12.0)), direction=direction,
      cycles=float(rng.uniform(0.8, 2.0)), amplitude=float(rng.uniform(0.35, 0.6)), scale=scale,
      x=float(rng.uniform(0.3, 0.7)), foot=float(rng.uniform(0.86, 0.95)), background=background)


@dataclasses.dataclass(frozen=True)
class FrameState:
  """One frame of a clip: the pose, the yaw, where the figure stands (foot x / y and height, as
  fractions of the frame) and the camera window on the background (centre x offset in frame
  widths, zoom factor)."""
  pose: ra.Pose
  yaw: float
  x: float
  foot: float
  scale: float
  offset: float
  zoom: float


def frame_states(plan: ClipPlan, frames: int) -> list[FrameState]:
  """A walk moves the figure the way it faces (across the frame, or toward / away from the
  camera: larger / smaller), a turn rotates it by 180 degrees, an orbit moves the camera 90
  degrees around it (the background slides), a pan slides figure and background together, a zoom
  scales both by 1.5 about the frame's centre."""
  out, x, scale = [], plan.x, plan.scale
  knobs = {"cycles": plan.cycles, "amplitude": plan.amplitude,
           "turn": plan.direction * TURN_DEGREES}
  for f in range(frames):
    t = f / max(1, frames - 1)
    pose = ra.motion_pose(plan.motion, t, knobs)
    azimuth = plan.direction * ORBIT_DEGREES * t if plan.camera == "orbit" else 0.0
    yaw = ra.wrap_angle(plan.start_yaw + pose.body_yaw - azimuth)
    if plan.motion == "walk" and f > 0:  # a step per frame along the facing direction
      step = 0.3 / max(1, frames - 1)
      x = float(np.clip(x - step * math.sin(math.radians(yaw)), 0.15, 0.85))
      scale *= math.exp(0.6 * step * math.cos(math.radians(yaw)))
    shown_x, offset, zoom = x, azimuth / 360.0, 1.0
    if plan.camera == "pan":  # panning left slides the scene (figure and wall) to the right
      shown_x += plan.direction * 0.35 * (t - 0.5)
      offset -= plan.direction * 0.35 * (t - 0.5)
    elif plan.camera == "zoom":
      zoom = 1.5 ** (plan.direction * t)
    out.append(FrameState(pose, yaw, 0.5 + (shown_x - 0.5) * zoom, 0.5 + (plan.foot - 0.5) * zoom,
                          scale * zoom, offset, zoom))
  return out


def clip_prompt(ident: ra.Identity, plan: ClipPlan, describe_appearance: bool = False) -> str:
  """Start view, motion and camera move in words; the appearance only for the text-identity
  ablation."""
  who = ident.describe() if describe_appearance else "a person"
  side = "left" if plan.direction > 0 else "right"
  motion = {"walk": WALK_TEXT[plan.start_view], "wave": "waves with the right hand",
            "turn": f"turns around to the {side}", "jump": "jumps up and down"}[plan.motion]
  camera = {"orbit": f"the camera orbits to the {side}", "pan": f"the camera pans {side}",
            "zoom": "the camera zooms " + ("in" if plan.direction > 0 else "out")}[plan.camera]
  return f"{who[0].upper()}{who[1:]} {VIEW_TEXT[plan.start_view]} {motion} while {camera}."


def prompt_vocabulary() -> list[str]:
  """Every word a prompt of this generator can contain (either prompt style), sorted: the demo's
  text encoder is built on it, so one vocabulary serves every dataset this script writes."""
  import itertools
  import re
  base = actor_identity(0, 0)
  fields = (("skin", ra.SKIN_TONES), ("hair_colour", ra.HAIR_COLOURS),
            ("hair_style", ra.HAIR_STYLES), ("shirt_colour", ra.CLOTH_COLOURS),
            ("shirt_pattern", ra.SHIRT_PATTERNS), ("pattern_colour", ra.CLOTH_COLOURS),
            ("long_sleeves", (True, False)), ("trouser_colour", ra.CLOTH_COLOURS),
            ("shorts", (True, False)), ("shoe_colour", ra.CLOTH_COLOURS))
  idents = [base] + [dataclasses.replace(base, **{field: value})
                     for field, values in fields for value in values]
  words = set()
  for motion, camera, view, direction in itertools.product(ra.MOTIONS, CAMERAS, START_VIEWS,
                                                           (-1.0, 1.0)):
    plan = ClipPlan(motion, camera, view, 0.0, direction, 1.0, 0.5, 0.5, 0.5, 0.9, "plain")
    words.update(re.findall(r"\w+", clip_prompt(base, plan).lower()))
  for ident in idents:
    words.update(re.findall(r"\w+", ident.describe().lower()))
  return sorted(words)


def render_clip(job: tuple) -> tuple[dict, dict, list[dict]]:
  """Renders one clip -> (manifest row without refs, annotation row, its frames' crop refs)."""
  root, seed, index, clip, size, frames, fps, background, describe, figure_scale = job
  if not isinstance(describe, bool):  # a fraction: its own random stream, the clip's is untouched
    describe = bool(np.random.default_rng([seed, index, clip + 1, 7]).random() < describe)
  ident, aid = actor_identity(seed, index), actor_id(index)
  rng = np.random.default_rng([seed, index, clip + 1])
  plan = clip_plan(rng, background, figure_scale)
  side = size * SUPERSAMPLE
  bg = (_plain_background(side) if background == "plain"  # room to pan, orbit and zoom out
        else _scene_background(rng, 3 * side, 2 * side))
  name = f"{aid}_c{clip:02d}"
  crop_frames = sorted({0, frames // 2, frames - 1})
  pixels, yaws, crops, body_boxes = [], [], [], []
  for f, s in enumerate(frame_states(plan, frames)):
    cx, half = (1.5 + s.offset) * side, side / s.zoom / 2  # the camera's window on the canvas
    img = bg.crop((int(round(cx - half)), int(round(side - half)), int(round(cx + half)),
                   int(round(side + half)))).resize((side, side), Image.BILINEAR)
    boxes = ra.draw_figure(img, ident, s.pose, ra.View(s.yaw, s.x * side, s.foot * side,
                                                       s.scale * side))
    yaw = s.yaw
    yaws.append(round(yaw, 2))
    body_boxes.append([round(v / side, 4) for v in boxes["body"]])
    if f in crop_frames:
      for region in ("face", "body"):
        crop, vis = ra.square_crop(img, boxes[region], size)
        if region == "face":  # a face turned away is not a visible face
          vis *= float(np.clip((math.cos(math.radians(yaw)) + 0.3) / 1.3, 0.0, 1.0))
        rel = f"refs/{name}_{region}_f{f:03d}.png"
        crop.save(os.path.join(root, rel))
        crops.append(_ref_row(rel, region, yaw, vis, "self_crop", f))
    pixels.append(np.asarray(img.reduce(SUPERSAMPLE)))
  video = f"clips/{name}.mp4"
  media.write_mp4(os.path.join(root, video), pixels, fps)
  row = {"video": video, "prompt": clip_prompt(ident, plan, describe), "actor_id": aid,
         "source": "synthetic", "width": size, "height": size,
         "duration_sec": round(frames / fps, 3), "refs": []}
  note = {"video": video, "motion": plan.motion, "camera": plan.camera,
          "start_view": plan.start_view, "direction": plan.direction, "yaw": yaws,
          "body_box": body_boxes}
  return row, note, crops


def generate(out: str, actors: int, clips_per_actor: int, seed: int, size: int = 64,
             frames: int = 17, fps: int = 8, workers: int = 2, background: str = "plain",
             describe_appearance: bool | float = False,
             figure_scale: tuple[float, float] = FIGURE_SCALE) -> int:
  """Writes the dataset to `out` (must not exist or be empty); returns the number of clips.
  describe_appearance: True (every prompt describes the actor), False, or a share of the clips.
  figure_scale: the range of the figure's height at a clip's start, fractions of the frame."""
  if os.path.exists(out) and os.listdir(out):
    raise FileExistsError(f"{out}: exists and is not empty; refusing to overwrite")
  tmp = os.path.join(os.path.dirname(os.path.abspath(out)),
                     f".{os.path.basename(os.path.abspath(out))}.tmp-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(os.path.join(tmp, "clips"))
  os.makedirs(os.path.join(tmp, "refs"))
  try:
    ref_jobs = [(tmp, seed, a, size) for a in range(actors)]
    clip_jobs = [(tmp, seed, a, c, size, frames, fps, background, describe_appearance,
                  tuple(figure_scale))
                 for a in range(actors) for c in range(clips_per_actor)]
    if workers > 1:
      with multiprocessing.get_context("fork").Pool(workers) as pool:
        actor_refs = pool.map(render_actor_refs, ref_jobs)
        clips = pool.map(render_clip, clip_jobs, chunksize=4)
    else:
      actor_refs = [render_actor_refs(j) for j in ref_jobs]
      clips = [render_clip(j) for j in clip_jobs]
    with open(os.path.join(tmp, "manifest.jsonl"), "w") as manifest, \
         open(os.path.join(tmp, "annotations.jsonl"), "w") as notes:
      for (row, note, _), job in zip(clips, clip_jobs):
        a, c = job[2], job[3]
        others = [r for (_, _, crops), j in zip(clips, clip_jobs)
                  if j[2] == a and j[3] != c for r in crops]  # never the clip's own frames
        row["refs"] = others + actor_refs[a][0]
        manifest.write(json.dumps(row) + "\n")
        notes.write(json.dumps(note) + "\n")
    with open(os.path.join(tmp, "actors.jsonl"), "w") as fh:
      for a in range(actors):
        fh.write(json.dumps({"actor_id": actor_id(a),
                             **dataclasses.asdict(actor_identity(seed, a))}) + "\n")
    with open(os.path.join(tmp, "gallery.jsonl"), "w") as fh:
      for _, gallery in actor_refs:
        fh.writelines(json.dumps(g) + "\n" for g in gallery)
    with open(os.path.join(tmp, "vocabulary.json"), "w") as fh:
      json.dump(prompt_vocabulary(), fh)
    with open(os.path.join(tmp, "palettes.json"), "w") as fh:
      json.dump({"shirt": ra.CLOTH_COLOURS, "trousers": ra.CLOTH_COLOURS,
                 "hair": ra.HAIR_COLOURS, "skin": ra.SKIN_TONES}, fh)
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
  parser.add_argument("--size", type=_positive, default=64, help="even, square frame side (px)")
  parser.add_argument("--frames", type=_positive, default=17, help="frames per clip (1 + 4k)")
  parser.add_argument("--fps", type=_positive, default=8)
  parser.add_argument("--workers", type=_positive, default=min(2, os.cpu_count() or 1))
  parser.add_argument("--background", choices=("plain", "scene"), default="plain",
                      help="plain: one controlled wall/floor; scene: random sky, ground, blocks")
  describe = parser.add_mutually_exclusive_group()
  describe.add_argument("--describe-appearance", action="store_true",
                        help="prompts spell out the actor's appearance (text-identity ablation)")
  describe.add_argument("--describe-fraction", type=float, default=0.0,
                        help="this share of the prompts spell out the appearance (a corpus)")
  parser.add_argument("--figure-scale", type=float, nargs=2, default=FIGURE_SCALE,
                      metavar=("LOW", "HIGH"),
                      help="the figure's height at a clip's start, a fraction of the frame side "
                           "drawn uniformly from [LOW, HIGH] (default %(default)s)")
  args = parser.parse_args(argv)
  low, high = args.figure_scale
  if not 0.0 < low <= high <= 1.0:
    parser.error(f"--figure-scale {low} {high}: expected 0 < LOW <= HIGH <= 1")
  if args.size % 2 or args.size < 16:
    parser.error(f"--size {args.size}: expected an even number >= 16 (H.264 needs even sides)")
  if (args.frames - 1) % 4:
    parser.error(f"--frames {args.frames}: expected 1 + 4k (the VAE groups frames in fours)")
  if not 0.0 <= args.describe_fraction <= 1.0:
    parser.error(f"--describe-fraction {args.describe_fraction}: expected a value in [0, 1]")
  try:
    n = generate(args.out, args.actors, args.clips_per_actor, args.seed, args.size, args.frames,
                 args.fps, args.workers, args.background,
                 args.describe_appearance or (args.describe_fraction or False),
                 (low, high))
  except FileExistsError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(json.dumps({"clips": n, "actors": args.actors, "out": args.out}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
