"""Multi-shot stories with one identity: the story file, its validation, and rendering it.

A story file (YAML, or JSON, which is YAML) names the references once, then the shots:

    references:               # paths relative to the story file (or absolute, or gs://)
      face: [face_front.png, face_side.png]
      body: [body_front.png]
      three_view: []
    seed: 0                   # optional: the film's sampling seed (default 0)
    context_frames: 1         # optional: latent frames a continued shot starts from (K)
    fps: 16                   # optional
    shots:
      - prompt: A person walks in place.
        camera: pan           # one of CAMERA_MOVES (default static)
        frames: 17            # 1 + 4k
        transition: cut       # cut (a fresh start; the first shot) or continue
      - prompt: A person turns around slowly.
        camera: orbit
        frames: 9
        transition: continue

Every shot sees the same references through one K/V cache (`continuation.Extender`). A cut shot
starts from noise (its first window, then continued windows while the shot is longer than one);
a continued shot extends the film from its last 1 + 4 (K - 1) frames, re-encoded by the causal
VAE as the K clean leading latent frames of a new window (as a training clip's first K latents
are; docs/method.md, continuation). The film has exactly sum(frames) frames, each shot its own
`frames` (1 + 4k) of them, back to back: a window's frames past the shot's end are dropped, so
the next shot continues from the film's own last frames and its prompt starts on its first frame.
Problems are one-line StoryErrors naming the shot and field.
"""
from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from wildactor_jax import fs
from wildactor_jax.infer import continuation

# Camera moves as the prompt's words (the demo's synthetic captions use the first four).
CAMERA_MOVES = {
    "static": "the camera holds still", "pan": "the camera pans sideways",
    "orbit": "the camera orbits around them", "zoom in": "the camera zooms in",
    "zoom out": "the camera zooms out", "pan left": "the camera pans left",
    "pan right": "the camera pans right", "tilt up": "the camera tilts up",
    "tilt down": "the camera tilts down", "dolly in": "the camera moves in",
    "dolly out": "the camera pulls back", "tracking": "the camera tracks them"}
TRANSITIONS = ("cut", "continue")
STORY_KEYS = ("references", "shots", "seed", "context_frames", "fps")
REFERENCE_KEYS = ("face", "body", "three_view")
SHOT_KEYS = ("prompt", "camera", "frames", "transition")


class StoryError(ValueError):
  """A one-line problem with a story file (names the shot and field)."""


@dataclasses.dataclass(frozen=True)
class Shot:
  prompt: str
  camera: str
  frames: int
  transition: str

  @property
  def text(self) -> str:
    """The prompt the model sees: the shot's words, then its camera move."""
    return f"{self.prompt.strip().rstrip('.')} while {CAMERA_MOVES[self.camera]}."


@dataclasses.dataclass(frozen=True)
class Story:
  path: str
  face: tuple[str, ...]
  body: tuple[str, ...]
  three_view: tuple[str, ...]
  shots: tuple[Shot, ...]
  seed: int = 0
  context_frames: int = 1
  fps: int = 16

  @property
  def film_frames(self) -> int:
    return sum(s.frames for s in self.shots)


def _int(value, where: str, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise StoryError(f"{where}: {value!r}, expected an integer >= {minimum}")
  return value


def _keys(obj, allowed, where: str) -> dict:
  if not isinstance(obj, dict):
    raise StoryError(f"{where}: expected a mapping of {', '.join(allowed)}")
  unknown = sorted(set(map(str, obj)) - set(allowed))
  if unknown:
    raise StoryError(f"{where}: unknown key {unknown[0]!r} (expected one of "
                     f"{', '.join(allowed)})")
  return obj


def _shot(raw, n: int, where: str, temporal_factor: int) -> Shot:
  at = f"{where}: shot {n}"
  raw = _keys(raw, SHOT_KEYS, at)
  prompt = raw.get("prompt")
  if not isinstance(prompt, str) or not prompt.strip():
    raise StoryError(f"{at}: prompt: expected a non-empty string")
  camera = raw.get("camera", "static")
  if camera not in CAMERA_MOVES:
    raise StoryError(f"{at}: camera {camera!r}: expected one of {', '.join(CAMERA_MOVES)}")
  transition = raw.get("transition", "cut")
  if transition not in TRANSITIONS:
    raise StoryError(f"{at}: transition {transition!r}: expected cut or continue")
  if transition == "continue" and n == 1:
    raise StoryError(f"{at}: transition continue: the first shot has nothing to continue "
                     "(expected cut)")
  if "frames" not in raw:
    raise StoryError(f"{at}: frames: missing (expected 1 + {temporal_factor}k)")
  frames = _int(raw["frames"], f"{at}: frames", 1)
  low = 1 + temporal_factor if transition == "continue" else 1
  if (frames - 1) % temporal_factor or frames < low:
    raise StoryError(f"{at}: frames {frames}: expected 1 + {temporal_factor}k"
                     + (f", at least {low} for a continued shot" if low > 1 else "")
                     + f" (e.g. {1 + 2 * temporal_factor}, {1 + 4 * temporal_factor})")
  return Shot(prompt, camera, frames, transition)


def parse_story(text: str, path: str, temporal_factor: int = 4) -> Story:
  """The story file's text -> Story with reference paths resolved against its folder; every
  reference must exist. StoryError (one line) on any problem."""
  import yaml
  try:
    raw = yaml.safe_load(text)
  except yaml.YAMLError as e:
    mark = getattr(e, "problem_mark", None)
    line = f" line {mark.line + 1}" if mark is not None else ""
    raise StoryError(f"{path}:{line} not valid YAML ({getattr(e, 'problem', None) or e})") \
        from None
  raw = _keys(raw, STORY_KEYS, path)
  refs = _keys(raw.get("references") or {}, REFERENCE_KEYS, f"{path}: references")
  folder = os.path.dirname(path)
  resolved = {}
  for kind in REFERENCE_KEYS:
    paths = refs.get(kind) or []
    if isinstance(paths, str):
      paths = [paths]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
      raise StoryError(f"{path}: references: {kind}: expected a list of image paths")
    full = [p if fs.is_remote(p) or os.path.isabs(p) else fs.join(folder, p) if folder else p
            for p in paths]
    for i, p in enumerate(full):
      if not fs.isfile(p):
        raise StoryError(f"{path}: references: {kind}[{i}] {paths[i]}: no such file")
    resolved[kind] = tuple(full)
  shots = raw.get("shots")
  if not isinstance(shots, list) or not shots:
    raise StoryError(f"{path}: shots: expected a non-empty list of shots")
  parsed = tuple(_shot(s, n, path, temporal_factor) for n, s in enumerate(shots, 1))
  return Story(path, resolved["face"], resolved["body"], resolved["three_view"], parsed,
               seed=_int(raw.get("seed", 0), f"{path}: seed", 0),
               context_frames=_int(raw.get("context_frames", 1), f"{path}: context_frames", 1),
               fps=_int(raw.get("fps", 16), f"{path}: fps", 1))


def load_story(path: str, temporal_factor: int = 4) -> Story:
  if not fs.isfile(path):
    raise StoryError(f"{path}: no such story file")
  return parse_story(fs.read_text(path), path, temporal_factor)


@dataclasses.dataclass
class Film:
  video: np.ndarray                    # (N, H, W, 3) float32 in [-1, 1], N = story.film_frames
  shot_frames: list[tuple[int, int]]   # per shot, [start, end) in `video`, back to back
  contexts: list[np.ndarray]           # per continued window, the clean latents it started from
  timings: dict


def latent_frames_for(frames: int, temporal_factor: int = 4) -> int:
  """The fewest latent frames that decode to at least `frames` frames (1 + ceil((F - 1) / 4))."""
  return 1 + -(-(frames - 1) // temporal_factor)


# Host bytes per value (frame x height x width x 3) of a rendered film: each run is decoded as
# float32 (the decoder's output and its host copy), the runs are joined (another float32 copy),
# then quantised (a float32 temporary and the uint8 frames). Measured: 13.8-16.4 bytes per value
# (peak RSS of `story` at 256x256 for 101, 401 and 801 frames, CPU, jax 0.10.2).
FILM_BYTES_PER_VALUE = 17


def available_host_bytes() -> int | None:
  """Memory this machine can still give a process (Linux MemAvailable), or None if unknown."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def film_host_bytes(story: Story, s) -> int:
  """What rendering the film holds in host memory at its peak (FILM_BYTES_PER_VALUE)."""
  return story.film_frames * s.height * s.width * 3 * FILM_BYTES_PER_VALUE


def check_film_fits(story: Story, s, available: int | None = None) -> None:
  """Before the model loads: a film that cannot be held in this machine's memory is refused
  (it would otherwise denoise for hours, then fail when decoded). available: bytes, default
  `available_host_bytes()`; unknown: not checked."""
  available = available_host_bytes() if available is None else available
  need = film_host_bytes(story, s)
  if available is None or need <= available:
    return
  n, longest = max(enumerate(story.shots, 1), key=lambda x: x[1].frames)
  raise StoryError(
      f"{story.path}: {story.film_frames} frames at {s.width}x{s.height} need about "
      f"{need / 2**30:.1f} GiB of memory to render and hold, and this machine has "
      f"{available / 2**30:.1f} GiB available (the longest is shot {n}: frames "
      f"{longest.frames}); render fewer frames per story, or at a smaller size")


def check_context(story: Story, s, grid) -> None:
  """The story's context_frames must leave a window at least one new latent frame."""
  if not 0 < story.context_frames < grid[0]:
    raise StoryError(f"{story.path}: context_frames {story.context_frames}: expected 1 .. "
                     f"{grid[0] - 1} (a window of {s.frames} frames has {grid[0]} latent frames)")


def render(model, vae, text_encoder, story: Story, images, types, s, grid,
           on_step=None) -> Film:
  """Generates the story's shots on one reference cache (see the module docstring). `images`,
  `types`: the loaded references; s, grid: the window's settings and latent grid."""
  from wildactor_jax import inference
  tf = int(vae.temporal_factor)
  check_context(story, s, grid)
  t_start = time.perf_counter()
  t0 = time.perf_counter()
  cache = inference.reference_cache(model, vae, images, types, grid)
  timings = {"reference_cache_s": time.perf_counter() - t0, "encode_s": 0.0}
  ext = continuation.Extender(model, vae, cache, s, grid, story.seed, on_step)
  shots: list[np.ndarray] = []  # each shot's frames
  run: list[np.ndarray] = []    # the shots since the last cut: what a continued shot may see
  t_denoise = time.perf_counter()
  for shot in story.shots:
    t0 = time.perf_counter()
    text = inference.prompt_states(model, text_encoder, shot.text)
    timings["encode_s"] += time.perf_counter() - t0
    if shot.transition == "cut":
      latents = ext.fresh(text)[:, :latent_frames_for(shot.frames, tf)]
      video = ext.decode(latents)[:shot.frames]
      if len(video) < shot.frames:  # longer than one window: continued within the shot
        video = ext.extend(video, text, shot.frames - len(video), story.context_frames)
      run = [video]
    else:
      previous = continuation.last_frames(run, continuation.frames_of(story.context_frames, tf))
      run.append(ext.extend(previous, text, shot.frames, story.context_frames)[len(previous):])
    shots.append(run[-1])
  timings["decode_s"] = ext.vae_s
  timings["denoise_s"] = (time.perf_counter() - t_denoise - timings["encode_s"]
                          - timings["decode_s"])
  ends = np.cumsum([shot.frames for shot in story.shots])
  shot_frames = [(int(end) - shot.frames, int(end)) for shot, end in zip(story.shots, ends)]
  timings.update(windows=ext.windows, denoise_step_s=inference.steady_step_s(ext.step_times),
                 total_s=time.perf_counter() - t_start)
  return Film(np.concatenate(shots), shot_frames, ext.contexts, timings)


def story_sheet(references: list[np.ndarray], film: np.ndarray,
                shot_frames: list[tuple[int, int]], columns: int = 8):
  """A contact sheet: the references in the first row (when any), then one row per shot with
  up to `columns` frames evenly spaced across it. film: uint8 (N, H, W, 3)."""
  from PIL import Image
  h, w = film.shape[1:3]
  rows = ([references] if references else []) + [
      [film[k] for k in np.linspace(a, b - 1, min(columns, b - a)).round().astype(int)]
      for a, b in shot_frames]
  cols = max(len(r) for r in rows)
  sheet = Image.new("RGB", (cols * w, len(rows) * h), (255, 255, 255))
  for y, row in enumerate(rows):
    for x, im in enumerate(row):
      sheet.paste(Image.fromarray(im).resize((w, h)), (x * w, y * h))
  return sheet
