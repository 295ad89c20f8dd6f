"""The demo's shipped pretrained parts: the learned video autoencoder, the frozen toy backbone,
and the benchmark's two readers.

WildActor freezes a PRETRAINED video DiT; a backbone trained for minutes inside `make demo` is too
weak to show the method, so the repository ships one pre-trained longer by the project's own
command (`python -m wildactor_jax.demo --from-scratch`, which re-creates every file from nothing),
and `make demo` spends its budget on the method. All four are trained on a pre-training corpus of
OTHER synthetic actors than the demo's, so the demo's held-out actors are unseen by every one of
them. wildactor_jax/demo/assets/:

  autoencoder.npz   models/video_autoencoder.py weights (float16) and latent statistics
  backbone.npz      the toy DiT's weights (bfloat16) and its ModelConfig
  embedder.npz      the benchmark's identity embedder (eval/embedder.py, ArcFace on corpus actors)
  probes.npz        the benchmark's prompt probes (eval/probes.py, on corpus clips)
  assets.json       per file: sha256, size, what made it (command, seeds, steps, corpus), versions

`verify` checks the files against assets.json (a damaged or swapped file is a one-line error),
`install_backbone` writes backbone.npz as a converter-format checkpoint, which WildActor training
loads and hashes like a converted Wan backbone.
"""
from __future__ import annotations

import hashlib
import json
import os

from wildactor_jax import fs

SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
MANIFEST = "assets.json"
AUTOENCODER, BACKBONE, EMBEDDER, PROBES = ("autoencoder.npz", "backbone.npz", "embedder.npz",
                                           "probes.npz")


class AssetError(ValueError):
  """A missing, damaged or mismatched demo asset (one line)."""


def file_sha256(path: str) -> str:
  return hashlib.sha256(fs.read_bytes(path)).hexdigest()


def verify(folder: str = SHIPPED) -> dict:
  """assets.json of `folder`, after checking every listed file's sha256."""
  manifest = fs.join(folder, MANIFEST)
  if not fs.exists(manifest):
    raise AssetError(f"{manifest}: missing (run `python -m wildactor_jax.demo --from-scratch` to "
                     "re-create the demo's pretrained parts)")
  info = fs.read_json(manifest)
  for name, entry in info["files"].items():
    path = fs.join(folder, name)
    if not fs.exists(path):
      raise AssetError(f"{path}: missing (listed in {manifest})")
    digest = file_sha256(path)
    if digest != entry["sha256"]:
      raise AssetError(f"{path}: sha256 {digest[:16]}..., {manifest} says "
                       f"{entry['sha256'][:16]}... (damaged or replaced; re-create it with "
                       "`python -m wildactor_jax.demo --from-scratch`)")
  return info


def describe(folder: str, made_by: dict) -> dict:
  """Writes `folder`/assets.json for the files present, with `made_by` (per file: command,
  seeds, steps, data) and the versions that made them."""
  import jax
  import flax
  files = {}
  for name in (AUTOENCODER, BACKBONE, EMBEDDER, PROBES):
    path = fs.join(folder, name)
    if fs.exists(path):
      files[name] = {"sha256": file_sha256(path), "bytes": len(fs.read_bytes(path)),
                     **made_by.get(name, {})}
  info = {"files": files, "versions": {"jax": jax.__version__, "flax": flax.__version__}}
  fs.atomic_write_json(fs.join(folder, MANIFEST), info, indent=1, sort_keys=True)
  return info


def export_backbone(workdir: str, path: str) -> str:
  """A pre-training run's newest checkpoint (every parameter trained) -> backbone.npz (bfloat16
  weights + the model's backbone config)."""
  from wildactor_jax.infer import load_run
  from wildactor_jax.models import module_npz
  run = load_run(workdir)
  meta = {"kind": "backbone", "config": dict(run.model.cfg.backbone_fields(),
                                             rope_max_seq_len=run.model.cfg.rope_max_seq_len),
          "source_step": int(run.step)}
  return module_npz.save(run.model, path, meta, dtype="bfloat16")


def install_backbone(npz: str, out: str) -> str:
  """backbone.npz -> a converter-format backbone checkpoint at `out` (kept when it already holds
  these weights: a rewrite would change the checkpoint's hash under the runs trained on it)."""
  from wildactor_jax.models import module_npz
  from wildactor_jax.models.config import ModelConfig
  from wildactor_jax.models.loading import create_model, save_backbone
  marker = out.rstrip("/") + ".installed_from.json"  # beside it: the hash reads its .json files
  source = {"npz_sha256": file_sha256(npz)}
  if fs.exists(marker) and fs.read_json(marker) == source and fs.exists(fs.join(out, "config.json")):
    return out
  meta = module_npz.read_meta(npz, "backbone")
  if meta.get("kind") != "backbone":
    raise AssetError(f"{npz}: not a backbone export (kind {meta.get('kind')!r})")
  config = ModelConfig.from_mapping(dict(meta["config"], lora=False))
  model = module_npz.build_and_load(lambda: create_model(config), npz, "backbone")
  save_backbone(model, out)
  fs.atomic_write_text(marker, json.dumps(source))
  return out
