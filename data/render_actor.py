"""Procedural CPU renderer of articulated human figures (numpy + pillow, no GPU).

An `Identity` fixes everything that must stay constant for one actor (skin tone, hair colour and
style, shirt colour and pattern, sleeves, trousers, shoes, body proportions). A `Pose` holds joint
angles for one instant of a motion (walk, wave, turn, jump). `draw_figure` projects the 3D
skeleton for a given yaw and paints it back-to-front (painter's algorithm) onto a PIL image.

Yaw convention (the manifest's `angle`): subject yaw relative to the camera in degrees,
(-180, 180]. 0 = facing the camera, +90 = facing screen-left, -90 = facing screen-right,
180 = back to the camera. The camera frame of a body point (x = actor's left, y = up,
z = actor's forward) at yaw a is screen_x = x cos a - z sin a, depth = x sin a + z cos a
(depth > 0 is toward the camera).

Visual cues that make yaw recoverable from pixels (so view labels are truthful): the face
(eyes, mouth, nose) and the chest badge are only drawn when they face the camera, hair covers
more of the head from behind, and the torso narrows in profile.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

# Named colours so prompts can describe identities in words.
SKIN_TONES = {"pale": (243, 214, 192), "light": (226, 184, 150), "tan": (196, 144, 104),
              "brown": (150, 100, 66), "dark": (96, 62, 42)}
HAIR_COLOURS = {"black": (25, 22, 22), "brown": (96, 60, 32), "blonde": (222, 190, 110),
                "red": (170, 64, 30), "grey": (160, 160, 165), "blue": (50, 90, 200)}
CLOTH_COLOURS = {"red": (200, 40, 40), "green": (40, 150, 60), "blue": (40, 80, 200),
                 "yellow": (235, 200, 40), "purple": (130, 60, 170), "orange": (240, 130, 30),
                 "white": (235, 235, 235), "black": (35, 35, 40), "teal": (30, 150, 150),
                 "pink": (235, 130, 170), "grey": (120, 120, 125), "navy": (25, 35, 90),
                 "khaki": (180, 160, 110), "brown": (110, 70, 40)}
HAIR_STYLES = ("short", "long", "bald", "ponytail")
SHIRT_PATTERNS = ("plain", "striped", "checked", "badge")
MOTIONS = ("walk", "wave", "turn", "jump")


@dataclasses.dataclass(frozen=True)
class Identity:
  """One actor's fixed appearance; colour fields are names from the palettes above."""
  skin: str
  hair_colour: str
  hair_style: str
  shirt_colour: str
  shirt_pattern: str
  pattern_colour: str
  long_sleeves: bool
  trouser_colour: str
  shorts: bool
  shoe_colour: str
  height: float          # overall scale, 1.0 = average
  shoulder_width: float  # fraction of height
  head_size: float       # head radius, fraction of height
  leg_ratio: float       # leg length / height
  limb_width: float      # limb thickness, fraction of height

  def describe(self) -> str:
    hair = "a bald head" if self.hair_style == "bald" else (
        f"{self.hair_style} {self.hair_colour} hair")
    pattern = {"plain": "", "striped": f" with {self.pattern_colour} stripes",
               "checked": f" with {self.pattern_colour} checks",
               "badge": f" with a {self.pattern_colour} chest badge"}[self.shirt_pattern]
    sleeves = "long-sleeved" if self.long_sleeves else "short-sleeved"
    legs = "shorts" if self.shorts else "trousers"
    return (f"a person with {self.skin} skin and {hair}, wearing a {sleeves} "
            f"{self.shirt_colour} shirt{pattern}, {self.trouser_colour} {legs} and "
            f"{self.shoe_colour} shoes")


def sample_identity(rng: np.random.Generator) -> Identity:
  cloth = sorted(CLOTH_COLOURS)
  shirt, pattern_colour, trousers, shoes = rng.choice(cloth, size=4, replace=False)
  return Identity(
      skin=str(rng.choice(sorted(SKIN_TONES))), hair_colour=str(rng.choice(sorted(HAIR_COLOURS))),
      hair_style=str(rng.choice(HAIR_STYLES)), shirt_colour=str(shirt),
      shirt_pattern=str(rng.choice(SHIRT_PATTERNS)), pattern_colour=str(pattern_colour),
      long_sleeves=bool(rng.random() < 0.5), trouser_colour=str(trousers),
      shorts=bool(rng.random() < 0.3), shoe_colour=str(shoes),
      height=float(rng.uniform(0.85, 1.1)), shoulder_width=float(rng.uniform(0.2, 0.28)),
      head_size=float(rng.uniform(0.06, 0.08)), leg_ratio=float(rng.uniform(0.45, 0.52)),
      limb_width=float(rng.uniform(0.045, 0.065)))


@dataclasses.dataclass(frozen=True)
class Pose:
  """Joint angles in radians (pitch > 0 swings a limb forward; abduction > 0 lifts it sideways)
  plus a vertical root offset (fraction of height) and the body's own yaw in degrees."""
  thigh: tuple[float, float] = (0.0, 0.0)        # (left, right)
  knee: tuple[float, float] = (0.0, 0.0)         # bend, >= 0
  shoulder: tuple[float, float] = (0.0, 0.0)     # pitch
  abduction: tuple[float, float] = (0.08, 0.08)
  elbow: tuple[float, float] = (0.1, 0.1)        # bend, >= 0
  lift: float = 0.0
  body_yaw: float = 0.0


def motion_pose(motion: str, t: float, params: dict) -> Pose:
  """Pose at normalised clip time t in [0, 1] for one of MOTIONS; `params` holds the per-clip
  random knobs (cycles, amplitude, turn extent) so one motion varies across clips."""
  phase = 2 * math.pi * params.get("cycles", 1.0) * t
  amp = params.get("amplitude", 0.5)
  if motion in ("walk", "turn"):
    s = math.sin(phase)
    pose = Pose(thigh=(amp * s, -amp * s), knee=(max(0.0, -s) * amp * 1.4, max(0.0, s) * amp * 1.4),
                shoulder=(-amp * s * 0.8, amp * s * 0.8), elbow=(0.3, 0.3),
                lift=0.01 * abs(math.cos(phase)))
    if motion == "turn":
      pose = dataclasses.replace(pose, body_yaw=params.get("turn", 180.0) * t)
    return pose
  if motion == "wave":
    wave = math.sin(phase * 2)
    return Pose(shoulder=(0.0, 0.2), abduction=(0.1, 2.3 + 0.15 * wave), elbow=(0.1, 0.6 + 0.5 * wave))
  if motion == "jump":
    hop = max(0.0, math.sin(phase))           # airborne half of each cycle
    crouch = max(0.0, -math.sin(phase))       # crouched between hops
    return Pose(thigh=(0.9 * crouch, 0.9 * crouch), knee=(1.6 * crouch, 1.6 * crouch),
                shoulder=(-0.5 * crouch + 2.6 * hop, -0.5 * crouch + 2.6 * hop),
                abduction=(0.3, 0.3), elbow=(0.2, 0.2), lift=0.12 * hop * amp * 2 - 0.05 * crouch)
  raise ValueError(f"motion {motion!r}: expected one of {MOTIONS}")


def _limb_direction(side: float, abduction: float, pitch: float) -> np.ndarray:
  """Unit vector of a limb hanging down, lifted sideways by `abduction` then swung forward."""
  x, y = side * math.sin(abduction), -math.cos(abduction)
  return np.array([x, y * math.cos(pitch), -y * math.sin(pitch)])


def skeleton(identity: Identity, pose: Pose) -> dict[str, np.ndarray]:
  """3D joint positions in body units (height 1 at scale 1), origin between the feet."""
  h = identity.height
  leg = identity.leg_ratio * h
  torso = (1.0 - identity.leg_ratio) * h - 2.3 * identity.head_size * h
  thigh_len, shin_len = 0.52 * leg, 0.48 * leg
  arm_len = 0.42 * h
  lift = pose.lift * h
  j = {"pelvis": np.array([0.0, leg + lift, 0.0])}
  j["neck"] = j["pelvis"] + np.array([0.0, torso, 0.0])
  j["head"] = j["neck"] + np.array([0.0, 1.15 * identity.head_size * h, 0.0])
  for i, (name, side) in enumerate((("l", 1.0), ("r", -1.0))):
    hip = j["pelvis"] + np.array([side * 0.055 * h, 0.0, 0.0])
    knee = hip + thigh_len * _limb_direction(side, 0.03, pose.thigh[i])
    ankle = knee + shin_len * _limb_direction(side, 0.0, pose.thigh[i] - pose.knee[i])
    shoulder = j["neck"] + np.array([side * identity.shoulder_width * h / 2, -0.03 * h, 0.0])
    elbow = shoulder + 0.5 * arm_len * _limb_direction(side, pose.abduction[i], pose.shoulder[i])
    hand = elbow + 0.5 * arm_len * _limb_direction(
        side, pose.abduction[i] * (1 + 0.3 * pose.elbow[i]), pose.shoulder[i] + pose.elbow[i])
    j.update({f"{name}_hip": hip, f"{name}_knee": knee, f"{name}_ankle": ankle,
              f"{name}_shoulder": shoulder, f"{name}_elbow": elbow, f"{name}_hand": hand})
  return j


@dataclasses.dataclass(frozen=True)
class View:
  """Where the figure lands on the canvas: yaw (deg), foot point (px) and pixels per body unit."""
  yaw: float
  foot_x: float
  foot_y: float
  scale: float


def _project(p: np.ndarray, view: View) -> tuple[float, float, float]:
  a = math.radians(view.yaw)
  sx = p[0] * math.cos(a) - p[2] * math.sin(a)
  depth = p[0] * math.sin(a) + p[2] * math.cos(a)
  return view.foot_x + view.scale * sx, view.foot_y - view.scale * p[1], depth


def _capsule(draw: ImageDraw.ImageDraw, a, b, width: float, colour) -> None:
  draw.line([a[:2], b[:2]], fill=colour, width=max(1, int(round(width))))
  r = width / 2
  for x, y in (a[:2], b[:2]):
    draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)


def _torso(draw, identity: Identity, j2d, view: View, shirt, pattern) -> None:
  """Trapezoid from shoulders to hips whose width shrinks in profile; pattern drawn in bands."""
  a = math.radians(view.yaw)
  u = view.scale * identity.height
  half_top = 0.5 * (identity.shoulder_width * u * abs(math.cos(a)) + 0.13 * u * abs(math.sin(a)))
  half_bot = 0.5 * (0.16 * u * abs(math.cos(a)) + 0.11 * u * abs(math.sin(a)))
  (nx, ny, _), (px, py, _) = j2d["neck"], j2d["pelvis"]
  top, bot = ny + 0.02 * u, py + 0.02 * u
  def edge(y, sign):
    f = (y - top) / max(1e-6, bot - top)
    cx = nx + (px - nx) * f
    return cx + sign * (half_top + (half_bot - half_top) * f)
  draw.polygon([(edge(top, -1), top), (edge(top, 1), top), (edge(bot, 1), bot),
                (edge(bot, -1), bot)], fill=shirt)
  if identity.shirt_pattern in ("striped", "checked"):
    bands = 6
    for k in range(bands):
      y0, y1 = top + (bot - top) * k / bands, top + (bot - top) * (k + 0.5) / bands
      if identity.shirt_pattern == "striped":
        draw.polygon([(edge(y0, -1), y0), (edge(y0, 1), y0), (edge(y1, 1), y1),
                      (edge(y1, -1), y1)], fill=pattern)
        continue
      y1 = top + (bot - top) * (k + 1) / bands
      for c in range(k % 2, 4, 2):
        xs0 = [edge(y, -1) + (edge(y, 1) - edge(y, -1)) * c / 4 for y in (y0, y1)]
        xs1 = [edge(y, -1) + (edge(y, 1) - edge(y, -1)) * (c + 1) / 4 for y in (y0, y1)]
        draw.polygon([(xs0[0], y0), (xs1[0], y0), (xs1[1], y1), (xs0[1], y1)], fill=pattern)
  elif identity.shirt_pattern == "badge" and math.cos(a) > 0.2:
    r = 0.035 * u
    bx = nx + (px - nx) * 0.3 - 0.5 * identity.shoulder_width * u * 0.35 * math.sin(a)
    by = top + (bot - top) * 0.3
    draw.ellipse([bx - r * math.cos(a), by - r, bx + r * math.cos(a), by + r], fill=pattern)


def _head(draw, identity: Identity, centre, view: View) -> None:
  a = math.radians(view.yaw)
  r = identity.head_size * identity.height * view.scale
  x, y = centre[0], centre[1]
  skin = SKIN_TONES[identity.skin]
  hair = HAIR_COLOURS[identity.hair_colour]
  bald = identity.hair_style == "bald"
  if identity.hair_style == "long" and math.cos(a) > -0.3:   # long hair hangs behind the head
    draw.rectangle([x - 1.05 * r, y, x + 1.05 * r, y + 2.0 * r], fill=hair)
  if identity.hair_style == "ponytail":                      # tail points away from the face
    tx = x + 1.0 * r * math.sin(a)
    draw.ellipse([tx - 0.45 * r, y - 0.2 * r, tx + 0.45 * r, y + 1.1 * r], fill=hair)
  draw.ellipse([x - r, y - 1.1 * r, x + r, y + 1.1 * r], fill=skin if bald else hair)
  facing = math.cos(a)
  if facing > -0.35:  # the face ellipse slides toward the side the head faces
    fw = r * (0.55 + 0.3 * abs(facing))
    fx = x - 0.45 * r * math.sin(a)
    fy = y + (0.25 if not bald else 0.0) * r
    draw.ellipse([fx - fw, fy - 0.85 * r, fx + fw, fy + 0.85 * r], fill=skin)
  if identity.hair_style == "long" and math.cos(a) <= -0.3:  # from behind it covers the neck
    draw.rectangle([x - 1.05 * r, y, x + 1.05 * r, y + 2.0 * r], fill=hair)
  if facing > 0.15:   # eyes, nose and mouth on a sphere, hidden when turned away
    for ex in (-0.38, 0.38):
      sx = x + r * (ex * math.cos(a) - 0.9 * math.sin(a))
      er = 0.12 * r
      draw.ellipse([sx - er * facing, y + 0.1 * r - er, sx + er * facing, y + 0.1 * r + er],
                   fill=(30, 30, 40))
    mx = x - 0.9 * r * math.sin(a)
    draw.line([(mx - 0.3 * r * facing, y + 0.6 * r), (mx + 0.3 * r * facing, y + 0.6 * r)],
              fill=(150, 40, 50), width=max(1, int(0.1 * r)))
  elif abs(math.sin(a)) > 0.6 and facing > -0.6:   # profile: nose bump on the facing side
    nx = x - 1.05 * r * math.copysign(1.0, math.sin(a))
    draw.ellipse([nx - 0.15 * r, y + 0.2 * r, nx + 0.15 * r, y + 0.45 * r], fill=skin)


def draw_figure(img: Image.Image, identity: Identity, pose: Pose, view: View) -> dict:
  """Paints the figure onto `img` in place; returns screen boxes (x0, y0, x1, y1) for "face" and
  'body' (clipping is the caller's business). `view.yaw` is the full relative yaw: the caller has
  already added `pose.body_yaw` and subtracted the camera's azimuth."""
  draw = ImageDraw.Draw(img)
  joints = skeleton(identity, pose)
  j2d = {k: _project(v, view) for k, v in joints.items()}
  u = view.scale * identity.height
  limb = identity.limb_width * u
  skin, shirt = SKIN_TONES[identity.skin], CLOTH_COLOURS[identity.shirt_colour]
  pattern = CLOTH_COLOURS[identity.pattern_colour]
  trousers, shoes = CLOTH_COLOURS[identity.trouser_colour], CLOTH_COLOURS[identity.shoe_colour]
  parts = []  # (depth, draw callback)
  for s in ("l", "r"):
    hip, knee, ankle = j2d[f"{s}_hip"], j2d[f"{s}_knee"], j2d[f"{s}_ankle"]
    d = (hip[2] + knee[2] + ankle[2]) / 3
    shin = skin if identity.shorts else trousers
    parts.append((d - 0.02, lambda h=hip, k=knee, a=ankle, c=shin: (
        _capsule(draw, h, k, limb * 1.25, trousers), _capsule(draw, k, a, limb * 1.05, c),
        draw.ellipse([a[0] - limb, a[1] - limb * 0.5, a[0] + limb, a[1] + limb * 0.6], fill=shoes))))
    sh, el, ha = j2d[f"{s}_shoulder"], j2d[f"{s}_elbow"], j2d[f"{s}_hand"]
    d = (sh[2] + el[2] + ha[2]) / 3
    fore = shirt if identity.long_sleeves else skin
    parts.append((d + 0.01, lambda s_=sh, e=el, h=ha, c=fore: (
        _capsule(draw, s_, e, limb, shirt), _capsule(draw, e, h, limb * 0.85, c),
        draw.ellipse([h[0] - limb * 0.6, h[1] - limb * 0.6, h[0] + limb * 0.6, h[1] + limb * 0.6],
                     fill=skin))))
  parts.append((0.0, lambda: (_capsule(draw, j2d["pelvis"], j2d["pelvis"], limb * 2.6, trousers),
                              _torso(draw, identity, j2d, view, shirt, pattern))))
  parts.append((0.02, lambda: _head(draw, identity, j2d["head"], view)))
  for _, paint in sorted(parts, key=lambda p: p[0]):
    paint()
  r = identity.head_size * u * 1.25
  hx, hy = j2d["head"][0], j2d["head"][1] + 0.1 * r
  xs = [p[0] for p in j2d.values()]
  ys = [p[1] for p in j2d.values()]
  pad = limb * 1.2
  return {"face": (hx - 1.3 * r, hy - 1.3 * r, hx + 1.3 * r, hy + 1.3 * r),
          "body": (min(xs) - pad, min(min(ys), hy - r) - pad, max(xs) + pad, max(ys) + pad)}


def square_crop(img: Image.Image, box, size: int, fill=(255, 255, 255)) -> tuple[Image.Image, float]:
  """Square crop around `box` (padded with `fill` outside the image), resized to size x size.
  Returns the crop and the fraction of the box that lay inside the image (its visibility)."""
  x0, y0, x1, y1 = box
  side = max(x1 - x0, y1 - y0)
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
  sq = [int(round(cx - side / 2)), int(round(cy - side / 2))]
  sq += [sq[0] + max(1, int(round(side))), sq[1] + max(1, int(round(side)))]
  canvas = Image.new("RGB", (sq[2] - sq[0], sq[3] - sq[1]), fill)
  canvas.paste(img.crop(sq), (0, 0))  # PIL pads out-of-range crops with black: repaint them
  w, h = img.size
  ix0, iy0, ix1, iy1 = max(sq[0], 0), max(sq[1], 0), min(sq[2], w), min(sq[3], h)
  if ix0 > sq[0] or iy0 > sq[1] or ix1 < sq[2] or iy1 < sq[3]:
    canvas = Image.new("RGB", canvas.size, fill)
    if ix1 > ix0 and iy1 > iy0:
      canvas.paste(img.crop((ix0, iy0, ix1, iy1)), (ix0 - sq[0], iy0 - sq[1]))
  inside = max(0.0, min(x1, w) - max(x0, 0)) * max(0.0, min(y1, h) - max(y0, 0))
  visibility = inside / max(1e-6, (x1 - x0) * (y1 - y0))
  return canvas.resize((size, size), Image.BILINEAR), float(min(1.0, visibility))


def view_label(angle: float) -> str:
  """Manifest `view` for a yaw in degrees (see the module docstring for the convention)."""
  a = (angle + 180.0) % 360.0 - 180.0
  if abs(a) <= 30.0:
    return "front"
  if abs(a) >= 150.0:
    return "back"
  return "left" if a > 0 else "right"


def wrap_angle(angle: float) -> float:
  """Degrees into (-180, 180]."""
  a = (angle + 180.0) % 360.0 - 180.0
  return 180.0 if a == -180.0 else a
