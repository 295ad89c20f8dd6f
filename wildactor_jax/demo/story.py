"""The demo's story stage: a 3-shot story of one held-out actor (cut, continue, cut) rendered by
`python -m wildactor_jax.story` into OUT/story.mp4, scored per shot with the demo's identity
score, for its row in the report."""
from __future__ import annotations

import json
import os

SHOTS = [
    {"prompt": "A person walks in place.", "camera": "pan", "frames": 9, "transition": "cut"},
    {"prompt": "A person turns around slowly.", "camera": "orbit", "frames": 9,
     "transition": "continue"},
    {"prompt": "A person waves with the right hand.", "camera": "zoom in", "frames": 9,
     "transition": "cut"},
]


def tell_story(python: str, raw: str, workdir: str, out: str, held_out: dict, pick_references,
               run_command, log: str, quick: bool = False) -> dict:
  """Writes OUT/story/story.yaml for the first held-out actor, runs the story CLI (through
  `run_command(cmd, log)`, the demo's runner) and returns the report's row: the film's frames,
  timings, and the identity margin of each shot and of the film."""
  from wildactor_jax import fs, media
  from wildactor_jax.demo import identity_score as ids
  from wildactor_jax.demo.report import _palettes
  distinct = _palettes(raw)
  actor = sorted(held_out)[0]
  faces, bodies = pick_references(raw, actor)
  folder = os.path.join(out, "story")
  os.makedirs(folder, exist_ok=True)
  story = {"references": {"face": faces, "body": bodies}, "seed": 0, "fps": 8, "shots": SHOTS}
  path = fs.atomic_write_text(os.path.join(folder, "story.yaml"), json.dumps(story, indent=2))
  video = os.path.join(out, "story.mp4")
  cmd = [python, "-m", "wildactor_jax.story", "--workdir", workdir, "--story", path,
         "--out", video] + (["--steps", "3"] if quick else [])
  lines = [l for l in run_command(cmd, log).splitlines() if l.startswith("{")]
  result = json.loads(lines[-1])
  frames = media.read_mp4(video)
  margins = [ids.identity_margin(frames[a:b], actor, distinct)["margin"]
             for a, b in result["shot_frames"]]
  return {"actor": actor, "video": "story.mp4", "contact_sheet": "story.png",
          "shots": len(SHOTS), "frames": result["frames"], "video_s": result["video_s"],
          "s_per_video_second": result["s_per_video_second"], "total_s": result["total_s"],
          "margin_per_shot": margins,
          "margin": ids.identity_margin(frames, actor, distinct)["margin"]}
