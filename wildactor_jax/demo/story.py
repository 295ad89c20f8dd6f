"""The demo's story stage: a 3-shot story of one held-out actor (cut, continue, cut) rendered by
`python -m wildactor_jax.story` into OUT/story.mp4 and scored for coherence (eval.coherence) with
the identity embedder the benchmark stage trained, for its row in the report."""
from __future__ import annotations

import json
import os

import numpy as np

SHOTS = [  # in the synthetic captions' words (data/synthetic_actors.py): the story CLI appends
    # " while <the camera move>", e.g. "... while the camera pans left."
    {"prompt": "A person facing left walks to the left", "camera": "pan left", "frames": 17,
     "transition": "cut"},
    {"prompt": "A person facing left turns around to the right", "camera": "pan right",
     "frames": 17, "transition": "continue"},
    {"prompt": "A person facing the camera waves with the right hand", "camera": "zoom in",
     "frames": 17, "transition": "cut"},
]
REFERENCES = {"face": ["face_y+000.png"], "body": ["body_y+000.png", "body_y+090.png"]}


def tell_story(python: str, raw: str, workdir: str, out: str, actor: str, embedder_path: str,
               run_command, log: str, quick: bool = False) -> dict:
  """Writes OUT/story/story.yaml for `actor`, runs the story CLI (through `run_command(cmd,
  log)`, the demo's runner) and returns the report's row: frames, timings and coherence."""
  from wildactor_jax import fs, media
  from wildactor_jax.eval import coherence, embedder, raw as raw_lib
  refs = {kind: [fs.join(raw, "refs", actor, name) for name in names]
          for kind, names in REFERENCES.items()}
  folder = os.path.join(out, "story")
  story = {"references": refs, "seed": 0, "fps": 8, "shots": SHOTS}
  path = fs.atomic_write_text(os.path.join(folder, "story.yaml"), json.dumps(story, indent=2))
  video = os.path.join(out, "story.mp4")
  cmd = [python, "-m", "wildactor_jax.story", "--workdir", workdir, "--story", path,
         "--out", video, "--overwrite"] + (["--steps", "3"] if quick else [])
  lines = [l for l in run_command(cmd, log).splitlines() if l.startswith("{")]
  result = json.loads(lines[-1])
  net = embedder.load(embedder_path)
  film = embedder.embed(net, media.read_mp4(video))
  ref_paths = refs["face"] + refs["body"]
  ref_emb = embedder.embed(net, np.stack([raw_lib.read_image(p) for p in ref_paths]))
  ref_yaws = [0.0, 0.0, 90.0]
  figures = coherence.story_figures(film, result["shot_frames"], ref_emb, ref_yaws)
  to_refs = figures["shot_to_references"]
  return {"actor": actor, "video": "story.mp4", "contact_sheet": "story.png",
          "shots": len(SHOTS), "frames": result["frames"],
          "s_per_video_second": result["s_per_video_second"], "total_s": result["total_s"],
          "shot_to_references": to_refs, "shot_to_shot": figures["shot_to_shot"]}
