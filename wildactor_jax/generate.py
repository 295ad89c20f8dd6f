"""python -m wildactor_jax.generate --workdir W | --checkpoint W/checkpoints/STEP
    --prompt "..." --face F [--face F2 ...] [--body B ...] [--three-view S] --out out.mp4
    [--frames --height --width --steps --cfg --shift --solver --seed --gif --mesh --config C]
    [--continue-from CLIP.mp4|LATENTS.npy --context-frames K] [--save-latents] [--overwrite]

Restores a trained WildActor (`wildactor_jax.infer.load_run`: the trained parameters of a
checkpoint, plus the frozen backbone it records) onto whatever devices exist, with shardings
built from the config, not the saving run's layout; a damaged newest checkpoint of --workdir is
skipped with a warning. Output paths, references and every numeric flag (a NaN or negative
--cfg, --shift <= 0, --fps 0, a window beyond the model's RoPE table) are checked before any
work. Writes OUT (mp4), OUT's stem + .png (contact sheet: references, then frames across the
clip) and optionally a gif; ends with one JSON line of timings and paths. Every bad input is a
one-line error, exit status 2, and no output file; sampled latents that are not finite are
refused the same way before anything is written. An output file that already exists is kept
(the same one-line refusal) unless --overwrite asks to replace it. Ctrl-C: one line, exit
status 130.

--continue-from extends a clip (`wildactor_jax.infer.continuation`): its last 1 + 4 (K - 1)
frames, re-encoded as K latent frames (--context-frames, default 1), lead a window of --frames
frames as a clip's first frames do in training, kept clean, and the window's other latent frames
are new (4 frames each). OUT is the whole extended clip: the clip's own frames (an mp4's, or the
decoded latents of a .npy as --save-latents writes OUT's stem + .npy), then the new ones. The
references' K/V cache is computed once.
"""
from __future__ import annotations

import argparse
import sys
import time

from wildactor_jax import cli, fs


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m wildactor_jax.generate", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  cli.add_run_arguments(p)
  p.add_argument("--prompt", required=True)
  p.add_argument("--face", action="append", default=[], help="face reference image (repeatable)")
  p.add_argument("--body", action="append", default=[], help="body reference image (repeatable)")
  p.add_argument("--three-view", action="append", default=[], dest="three_view",
                 help="front/side/back sheet (counts as a body reference)")
  p.add_argument("--out", required=True, help="output .mp4")
  cli.add_overwrite_argument(p)
  p.add_argument("--frames", type=int)
  cli.add_sampling_arguments(p)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--fps", type=int, default=16)
  p.add_argument("--gif", action="store_true", help="also write OUT's stem + .gif")
  p.add_argument("--mesh", default="1,-1,1,1", help="data,fsdp,context,tensor (-1: the rest)")
  p.add_argument("--continue-from", dest="continue_from",
                 help="a clip (.mp4) or its latents (.npy) to extend")
  p.add_argument("--context-frames", dest="context_frames", type=int, default=1,
                 help="latent frames of the clip a continuation starts from (kept clean)")
  p.add_argument("--save-latents", dest="save_latents", action="store_true",
                 help="also write the clip's latents to OUT's stem + .npy (to continue later)")
  return p.parse_args(argv)


def run(args) -> dict:
  from wildactor_jax import config_lib, inference, media
  from wildactor_jax.infer import encoders, restore
  from wildactor_jax.infer.settings import settings_from_config
  outputs = cli.check_outputs(args)
  source = args.checkpoint or args.workdir
  workdir, _ = restore.checkpoint_location(source)
  config = restore.run_config(workdir, config_lib.load_config_file(args.config)
                              if args.config else None)
  s = settings_from_config(config, frames=args.frames, height=args.height, width=args.width,
                           steps=args.steps, cfg=args.cfg, shift=args.shift, solver=args.solver,
                           seed=args.seed)
  cli.check_positive("--fps", args.fps)
  mesh = cli.parse_mesh(args.mesh)
  refs = cli.check_references(args, config)
  vae = encoders.vae_from_config(config)
  inference.check_window(s, vae, config.model, len(refs))
  images = [media.load_reference(path, s.height, s.width, flag) for flag, path, _ in refs]
  previous = None
  if args.continue_from:
    from wildactor_jax.infer import continuation
    grid = inference.check_geometry(s, vae, tuple(config.model.patch_size))
    if not 0 < args.context_frames < grid[0]:
      raise cli.GenerateError(f"--context-frames {args.context_frames}: expected 1 .. "
                              f"{grid[0] - 1} (a window of {s.frames} frames has {grid[0]} "
                              "latent frames)")
    previous = continuation.load_context(args.continue_from, vae, s.height, s.width)
  t0 = time.perf_counter()
  loaded = restore.load_run(source, mesh, config=config)
  restore_s = time.perf_counter() - t0
  text_encoder = encoders.text_encoder_from_config(config)
  from tqdm import tqdm
  # Closed on the way out of an error too: a bar left open prints after (below) the error line.
  with tqdm(total=s.steps, desc="denoising", unit="step", file=sys.stderr) as bar, \
      loaded.sharding():
    on_step = lambda i, dt: bar.update(1)
    if previous is None:
      video, timings, latents = inference.generate(
          loaded.model, vae, text_encoder, args.prompt, images, [t for _, _, t in refs], s,
          on_step, return_latents=True)
    else:
      video, timings, latents = continue_clip(loaded.model, vae, text_encoder, args, images,
                                              [t for _, _, t in refs], s, previous, on_step)
  frames = media.to_uint8(video)
  written = {"video": media.write_mp4(outputs["video"], frames, args.fps)}
  sheet = media.contact_sheet([media.to_uint8(im) for im in images], frames)
  written["contact_sheet"] = media.write_png(outputs["contact_sheet"], sheet)
  if args.gif:
    written["gif"] = media.write_gif(outputs["gif"], frames)
  if args.save_latents:
    import io
    import numpy as np
    buf = io.BytesIO()
    np.save(buf, np.asarray(latents, np.float32))
    written["latents"] = fs.atomic_write_bytes(outputs["latents"], buf.getvalue())
  return {"checkpoint_step": loaded.step, "frames": int(frames.shape[0]), "height": s.height,
          "width": s.width, "steps": s.steps, "references": len(refs), "restore_s": restore_s,
          **timings, **written}


def continue_clip(model, vae, text_encoder, args, images, types, s, previous, on_step):
  """(whole clip (T, H, W, 3) in [-1, 1], timings, its latents): the clip `previous` = (frames
  float32, uint8 frames or None) extended by one window that starts from its last frames,
  re-encoded as --context-frames latent frames (`continuation.Extender.extend`)."""
  from wildactor_jax import inference
  from wildactor_jax.infer import continuation
  video, _ = previous
  grid = inference.check_geometry(s, vae, model.cfg.patch_size)
  timings = {}
  t0 = time.perf_counter()
  text = inference.prompt_states(model, text_encoder, args.prompt)
  cache = inference.reference_cache(model, vae, images, types, grid)
  timings["encode_s"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  ext = continuation.Extender(model, vae, cache, s, grid, s.seed, on_step)
  tf = int(vae.temporal_factor)
  new = continuation.frames_of(grid[0], tf) - continuation.frames_of(args.context_frames, tf)
  out = ext.extend(video, text, new, args.context_frames)
  timings["denoise_s"] = time.perf_counter() - t0 - ext.vae_s
  timings["denoise_step_s"] = inference.steady_step_s(ext.step_times)
  timings["decode_s"] = ext.vae_s
  timings["new_frames"] = int(len(out) - len(video))
  latents = (continuation.clip_latents(vae, out) if getattr(args, "save_latents", False)
             else None)
  return out, timings, latents


def main(argv=None) -> int:
  return cli.json_main(parse_args, run, argv)


if __name__ == "__main__":
  cli.script_exit(main())
