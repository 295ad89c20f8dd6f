"""python -m wildactor_jax.story --workdir W | --checkpoint W/checkpoints/STEP --story story.yaml
    --out film.mp4 [--frames --height --width --steps --cfg --shift --solver --seed --mesh
    --config] [--overwrite]

Renders a multi-shot story (the file format: `wildactor_jax.infer.story`) with one identity: the
references are named once and serve every shot through one K/V cache; shots cut or continue the
previous one. --frames is the window the model denoises at once (default: the trained clip
length); a shot longer than a window is extended window by window. --seed overrides the story's.

Writes OUT (one mp4), OUT's stem + .png (contact sheet: the references, then a row per shot) and
ends with one JSON line of timings. The story file, references, output paths, sampler flags, the
window (it must fit the model's RoPE table) and the film's size (it must fit this machine's
memory) are all checked before the model loads; a bad story file is a one-line error naming
the shot and field, exit status 2, and nothing is written. An output file that already exists
is kept unless --overwrite asks to replace it.
"""
from __future__ import annotations

import argparse
import sys
import time

from wildactor_jax import cli


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m wildactor_jax.story", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  cli.add_run_arguments(p)
  p.add_argument("--story", required=True, help="story file (.yaml or .json)")
  p.add_argument("--out", required=True, help="output .mp4")
  cli.add_overwrite_argument(p)
  p.add_argument("--frames", type=int, help="window length (1 + 4k; default: the config's)")
  cli.add_sampling_arguments(p)
  p.add_argument("--seed", type=int, help="sampling seed (default: the story's)")
  p.add_argument("--mesh", default="1,-1,1,1", help="data,fsdp,context,tensor (-1: the rest)")
  args = p.parse_args(argv)
  args.gif = False  # cli.check_outputs' contract
  return args


def run(args) -> dict:
  import dataclasses
  from wildactor_jax import config_lib, inference, media
  from wildactor_jax.infer import encoders, restore, story as story_lib
  from wildactor_jax.infer.settings import settings_from_config
  t_start = time.perf_counter()
  outputs = cli.check_outputs(args)
  workdir, _ = restore.checkpoint_location(args.checkpoint or args.workdir)
  config = restore.run_config(workdir, config_lib.load_config_file(args.config)
                              if args.config else None)
  vae = encoders.vae_from_config(config)
  story = story_lib.load_story(args.story, int(vae.temporal_factor))
  if args.seed is not None:
    story = dataclasses.replace(story, seed=args.seed)
  s = settings_from_config(config, frames=args.frames, height=args.height, width=args.width,
                           steps=args.steps, cfg=args.cfg, shift=args.shift, solver=args.solver,
                           seed=story.seed)
  grid = inference.check_geometry(s, vae, tuple(config.model.patch_size))
  story_lib.check_context(story, s, grid)
  names = argparse.Namespace(face=list(story.face), body=list(story.body),
                             three_view=list(story.three_view))
  try:
    refs = cli.check_references(names, config)
  except cli.GenerateError as e:
    raise story_lib.StoryError(f"{args.story}: references: {e}") from None
  images = [media.load_reference(path, s.height, s.width, f"{args.story}: references: {flag[2:]}")
            for flag, path, _ in refs]
  inference.check_window(s, vae, config.model, len(refs))
  story_lib.check_film_fits(story, s)
  mesh = cli.parse_mesh(args.mesh)
  t0 = time.perf_counter()
  loaded = restore.load_run(args.checkpoint or args.workdir, mesh, config=config)
  restore_s = time.perf_counter() - t0
  text_encoder = encoders.text_encoder_from_config(config)
  from tqdm import tqdm
  # Closed on the way out of an error too: a bar left open prints after (below) the error line.
  with tqdm(desc="denoising", unit="step", file=sys.stderr) as bar, loaded.sharding():
    film = story_lib.render(loaded.model, vae, text_encoder, story, images,
                            [t for *_, t in refs], s, grid, lambda i, dt: bar.update(1))
  frames = media.to_uint8(film.video)
  written = {"video": media.write_mp4(outputs["video"], frames, story.fps)}
  sheet = story_lib.story_sheet([media.to_uint8(im) for im in images], frames, film.shot_frames)
  written["contact_sheet"] = media.write_png(outputs["contact_sheet"], sheet)
  seconds = len(frames) / story.fps
  total_s = time.perf_counter() - t_start
  return {"checkpoint_step": loaded.step, "shots": len(story.shots), "frames": len(frames),
          "fps": story.fps, "video_s": seconds, "height": s.height, "width": s.width,
          "window_frames": s.frames, "steps": s.steps, "references": len(refs),
          "seed": story.seed, "shot_frames": film.shot_frames, "restore_s": restore_s,
          **film.timings, "wall_s": total_s,
          "s_per_video_second": film.timings["total_s"] / seconds, **written}


def main(argv=None) -> int:
  return cli.json_main(parse_args, run, argv)


if __name__ == "__main__":
  cli.script_exit(main())
