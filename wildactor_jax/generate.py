"""python -m wildactor_jax.generate --workdir W | --checkpoint W/checkpoints/STEP
    --prompt "..." --face F [--face F2 ...] [--body B ...] [--three-view S] --out out.mp4
    [--frames --height --width --steps --cfg --shift --solver --seed --gif --mesh --config C]

Restores a trained WildActor (the LoRA state of a training checkpoint, plus the frozen backbone
the checkpoint records) onto whatever devices exist, with shardings built from the config, not
the saving run's layout. Writes OUT (mp4), OUT's stem + .png (contact sheet: references, then
frames across the clip) and optionally a gif; ends with one JSON line of timings and paths.
Every bad input is a one-line error, exit status 2, and no output file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


from wildactor_jax.media import MediaError


class GenerateError(ValueError):
  """A one-line, user-facing reason generation cannot proceed."""


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m wildactor_jax.generate", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--workdir", help="training workdir: its newest checkpoint is used")
  src.add_argument("--checkpoint", help="one checkpoint step folder (W/checkpoints/STEP)")
  p.add_argument("--config", help="experiment config (default: the one saved in the workdir)")
  p.add_argument("--prompt", required=True)
  p.add_argument("--face", action="append", default=[], help="face reference image (repeatable)")
  p.add_argument("--body", action="append", default=[], help="body reference image (repeatable)")
  p.add_argument("--three-view", action="append", default=[], dest="three_view",
                 help="front/side/back sheet (counts as a body reference)")
  p.add_argument("--out", required=True, help="output .mp4")
  p.add_argument("--frames", type=int)
  p.add_argument("--height", type=int)
  p.add_argument("--width", type=int)
  p.add_argument("--steps", type=int)
  p.add_argument("--cfg", type=float)
  p.add_argument("--shift", type=float)
  p.add_argument("--solver", choices=["euler", "unipc"])
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--fps", type=int, default=16)
  p.add_argument("--gif", action="store_true", help="also write OUT's stem + .gif")
  p.add_argument("--mesh", default="1,-1,1,1", help="data,fsdp,context,tensor (-1: the rest)")
  return p.parse_args(argv)


def checkpoint_location(args) -> tuple[str, int]:
  """(workdir, step) of the checkpoint to restore; errors if there is none."""
  if args.checkpoint:
    folder = os.path.abspath(args.checkpoint.rstrip("/"))
    step = os.path.basename(folder)
    if not step.isdigit() or not os.path.isdir(folder):
      raise GenerateError(f"--checkpoint {args.checkpoint}: expected a checkpoint step folder "
                          "such as WORKDIR/checkpoints/200")
    return os.path.dirname(os.path.dirname(folder)), int(step)
  ckpts = os.path.join(args.workdir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit()) if os.path.isdir(ckpts) else []
  if not steps:
    raise GenerateError(f"--workdir {args.workdir}: no finished checkpoint in {ckpts}")
  return os.path.abspath(args.workdir), steps[-1]


def load_config(args, workdir: str):
  from ml_collections import ConfigDict
  if args.config:
    from wildactor_jax.config_lib import load_config_file
    return load_config_file(args.config)
  saved = os.path.join(workdir, "config.json")
  if not os.path.isfile(saved):
    raise GenerateError(f"{saved}: missing; pass --config with the experiment's config file")
  with open(saved) as fh:
    return ConfigDict(json.load(fh))


def settings(args, config):
  from wildactor_jax.inference import GenerationSettings
  pick = lambda v, d: d if v is None else v
  return GenerationSettings(
      frames=pick(args.frames, int(config.data.frames)),
      height=pick(args.height, int(config.data.height)),
      width=pick(args.width, int(config.data.width)),
      steps=pick(args.steps, int(config.sample.steps)), cfg=pick(args.cfg, float(config.sample.cfg)),
      shift=pick(args.shift, float(config.sample.shift)),
      solver=pick(args.solver, str(config.sample.solver)), seed=args.seed)


def check_references(args, config) -> list[tuple[str, str, int]]:
  """[(flag, path, type)] in the order faces, bodies, three-view sheets; count limits."""
  from wildactor_jax.models.irope import BODY, FACE
  max_faces = int(config.data.get("max_faces", 5))
  max_bodies = int(config.data.get("max_bodies", 5))
  bodies = len(args.body) + len(args.three_view)
  if len(args.face) > max_faces or bodies > max_bodies:
    raise GenerateError(f"too many references: {len(args.face)} faces / {bodies} bodies "
                        f"(incl. three-view); this model takes at most {max_faces} / {max_bodies}")
  refs = ([("--face", f, FACE) for f in args.face] + [("--body", b, BODY) for b in args.body]
          + [("--three-view", s, BODY) for s in args.three_view])
  if not refs and config.sample.get("require_references", True):
    raise GenerateError("no references: pass --face/--body/--three-view (this config sets "
                        "sample.require_references; set it False for text-only generation)")
  return refs


def restore_model(config, workdir: str, step: int, mesh_shape):
  """The trained model on this machine's devices: frozen backbone + the checkpoint's LoRA."""
  from flax import nnx
  from wildactor_jax.models.config import ModelConfig
  from wildactor_jax.models.loading import create_model
  from wildactor_jax.sharding import create_mesh
  from wildactor_jax.train_lib import checkpoint as ckpt_lib, state as state_lib
  import math
  import jax
  # An explicit shape (no -1) may use fewer devices than exist: the first ones.
  devices = None if -1 in mesh_shape else jax.devices()[:math.prod(mesh_shape)]
  mesh = create_mesh(mesh_shape, config.mesh.axes, devices=devices)
  rules = tuple((name, axes) for name, axes in config.mesh.rules)
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=1000, async_save=False)
  try:
    meta = checkpointer.read_meta(step)
    cfg = ModelConfig.from_mapping(config.model)
    if meta.get("model") and ModelConfig.from_mapping(meta["model"]) != cfg:
      raise GenerateError(f"{checkpointer.directory}/{step}: trained with a different model config "
                          "than --config gives (compare config.model with the checkpoint's meta)")
    try:
      ckpt_lib.check_backbone(meta, ckpt_lib.backbone_record(config), checkpointer.directory)
    except ckpt_lib.BackboneMismatchError as e:
      raise GenerateError(str(e)) from None
    seed = int(config.train.seed)
    model = create_model(cfg, seed=seed, backbone_path=config.get("backbone_path") or None,
                         mesh=mesh, rules=rules)
    tx, _ = state_lib.build_optimizer(config.train)
    setup = state_lib.make_setup(cfg, tx, mesh, rules, seed,
                                 str(config.train.get("trainable", "lora")))
    train_state, _ = checkpointer.restore(step, setup.abstract_train)
    nnx.update(model, train_state["lora"])
  finally:
    checkpointer.close()
  return model, mesh


def run(args) -> dict:
  from wildactor_jax import encode, inference, media
  workdir, step = checkpoint_location(args)
  config = load_config(args, workdir)
  s = settings(args, config)
  refs = check_references(args, config)
  if not args.out.endswith(".mp4"):
    raise GenerateError(f"--out {args.out}: expected a .mp4 path")
  vae = encode.vae_from_config(config)
  inference.check_geometry(s, vae, tuple(config.model.patch_size))
  images = [media.load_reference(path, s.height, s.width, flag) for flag, path, _ in refs]
  mesh_shape = [int(v) for v in args.mesh.split(",")]
  t0 = time.perf_counter()
  model, _ = restore_model(config, workdir, step, mesh_shape)
  restore_s = time.perf_counter() - t0
  text_encoder = encode.text_encoder_from_config(config)
  from tqdm import tqdm
  bar = tqdm(total=s.steps, desc="denoising", unit="step", file=sys.stderr)
  video, timings = inference.generate(model, vae, text_encoder, args.prompt, images,
                                      [t for _, _, t in refs], s, lambda i, dt: bar.update(1))
  bar.close()
  frames = media.to_uint8(video)
  stem = os.path.splitext(args.out)[0]
  outputs = {"video": media.write_mp4(args.out, frames, args.fps)}
  sheet = media.contact_sheet([media.to_uint8(im) for im in images], frames)
  outputs["contact_sheet"] = media.write_png(stem + ".png", sheet)
  if args.gif:
    outputs["gif"] = media.write_gif(stem + ".gif", frames)
  return {"checkpoint_step": step, "frames": int(frames.shape[0]), "height": s.height,
          "width": s.width, "steps": s.steps, "references": len(refs), "restore_s": restore_s,
          **timings, **outputs}


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    result = run(args)
  except (GenerateError, MediaError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
