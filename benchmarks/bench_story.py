"""Long-form coherence and cost of stories: 5-shot stories of held-out actors, with and without
references, scored by `wildactor_jax.eval.coherence` with the evaluation's identity embedder.

    python benchmarks/bench_story.py --workdir W --raw RAW [--actors 6 --steps N --embedder E.npz]

Each story is one cut and 4 continued shots (9 frames each: 5 x 9 = 45 frames at 16 fps),
its prompts the synthetic captions' motions and camera moves, rendered by
`wildactor_jax.infer.story.render` on one reference cache per story. Prints one JSON line per
story and one summary line per condition: cross-shot identity similarity (shot to references
and shot to shot, per view bin) and identity drift over the 4 continued segments, with
bootstrap 95% intervals over actors, and the seconds of compute per second of video.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

SHOTS = [("A person walks in place.", "pan"), ("A person turns around slowly.", "orbit"),
         ("A person waves with the right hand.", "zoom in"), ("A person jumps up and down.", "pan"),
         ("A person walks in place.", "zoom out")]


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", required=True)
  p.add_argument("--raw", required=True, help="the raw synthetic dataset the run was built from")
  p.add_argument("--actors", type=int, default=6, help="held-out actors (the first N)")
  p.add_argument("--steps", type=int, help="sampling steps (default: the run's config)")
  p.add_argument("--frames", type=int, default=9, help="frames per shot (1 + 4k)")
  p.add_argument("--embedder", help="embedder .npz: read if it exists, else trained and saved")
  p.add_argument("--test-fraction", type=float, default=0.2)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)

  from wildactor_jax import media
  from wildactor_jax.eval import coherence, embedder, protocol, raw
  from wildactor_jax.eval.generated import reference_paths
  from wildactor_jax.infer import encoders, load_run, story as story_lib
  from wildactor_jax.infer.settings import settings_from_config
  from wildactor_jax import inference

  ds = raw.load(args.raw)
  held = raw.held_out(ds.actors, args.test_fraction)
  if args.embedder and os.path.exists(args.embedder):
    net = embedder.load(args.embedder)
  else:
    net = protocol.fit_embedder(ds, sorted(set(ds.actors) - set(held)), seed=args.seed)
    if args.embedder:
      embedder.save(net, args.embedder)
  run = load_run(args.workdir)
  vae = encoders.vae_from_config(run.config)
  text = encoders.text_encoder_from_config(run.config)
  s = settings_from_config(run.config, steps=args.steps, seed=args.seed)
  grid = inference.check_geometry(s, vae, tuple(run.config.model.patch_size))
  shots = tuple(story_lib.Shot(prompt, camera, args.frames, "cut" if i == 0 else "continue")
                for i, (prompt, camera) in enumerate(SHOTS))
  stories = {"with_refs": [], "without_refs": []}
  cost = {"with_refs": [], "without_refs": []}
  for actor in held[:args.actors]:
    # The Actor-Bench's references for the actor (views spread, the model's counts).
    paths = reference_paths(ds, actor, int(run.config.data.get("max_faces", 2)),
                            int(run.config.data.get("max_bodies", 2)))
    images = [media.load_reference(path, s.height, s.width, "reference") for path, _ in paths]
    types = [kind for _, kind in paths]
    gallery = ds.gallery(actor, "body")
    refs = embedder.embed(net, np.stack([raw.read_image(r.path) for r in gallery]))
    ref_yaws = np.array([r.yaw for r in gallery])
    for condition, (imgs, tys) in {"with_refs": (images, types),
                                   "without_refs": ([], [])}.items():
      story = story_lib.Story(f"bench:{actor}", (), (), (), shots, seed=args.seed)
      film = story_lib.render(run.model, vae, text, story, imgs, tys, s, grid)
      frames = media.to_uint8(film.video)
      emb = embedder.embed(net, frames)
      starts = [a for a, _ in film.shot_frames]
      figures = coherence.story_figures(emb, film.shot_frames, refs, ref_yaws, starts)
      seconds = len(frames) / story.fps
      row = {"actor": actor, "condition": condition, "frames": len(frames), "video_s": seconds,
             "windows": film.timings["windows"], "steps": s.steps, "total_s": film.timings["total_s"],
             "s_per_video_second": film.timings["total_s"] / seconds,
             "denoise_step_s": film.timings["denoise_step_s"], "figures": figures}
      stories[condition].append({"actor": actor, "figures": figures})
      cost[condition].append(row["s_per_video_second"])
      print(json.dumps(row), flush=True)
  for condition, rows in stories.items():
    print(json.dumps({"summary": condition, "stories": len(rows), "shots": len(shots),
                      "frames_per_story": len(shots) * args.frames,
                      "steps": s.steps, "checkpoint_step": run.step,
                      "s_per_video_second_median": float(np.median(cost[condition])),
                      **coherence.summarise(rows, seed=args.seed)}), flush=True)


if __name__ == "__main__":
  sys.exit(main())
