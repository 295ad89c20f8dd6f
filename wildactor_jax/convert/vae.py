"""Wan VAE weights (safetensors) -> our checkpoint (`python -m wildactor_jax.convert --kind vae`).

Two source layouts are recognised by their keys:
- diffusers `AutoencoderKLWan`: a folder with config.json and safetensors (`encoder.conv_in...`);
- the original Wan release (`Wan2.1_VAE.pth` / `Wan2.2_VAE.pth` keys: `encoder.conv1...`,
  `encoder.downsamples.N...`, `decoder.upsamples.N...`, `conv1`/`conv2` for the quant convs),
  saved as one .safetensors file. It has no config: the architecture (Wan2.1 or 2.2, widths,
  z_dim, res blocks per stage, temporal stages) is read off the tensor shapes, and the latent
  statistics come from `wildactor_jax.models.vae_stats` (released values for z16 / z48).

Our parameter names mirror diffusers' module paths (`weight` -> `kernel`, Wan's
`resample = Sequential(pad/upsample, Conv2d)` keeps its `.1`), so the mapping is: original key ->
diffusers key -> our path, with kernels transposed to channels-last (kt, kh, kw, in, out) and 1x1
convolutions stored as (in, out) matrices.
"""
from __future__ import annotations

import re

import numpy as np

from wildactor_jax import fs
from wildactor_jax.convert.common import (ConversionError, TensorReader, check_keys,
                                          safetensors_files, source_folder)
from wildactor_jax.models.checkpoint_io import read_json, write_checkpoint

RESIDUAL = {
    "residual.0.gamma": "norm1.gamma", "residual.2.weight": "conv1.weight",
    "residual.2.bias": "conv1.bias", "residual.3.gamma": "norm2.gamma",
    "residual.6.weight": "conv2.weight", "residual.6.bias": "conv2.bias",
    "shortcut.weight": "conv_shortcut.weight", "shortcut.bias": "conv_shortcut.bias",
}
ATTENTION = ("norm.gamma", "to_qkv.weight", "to_qkv.bias", "proj.weight", "proj.bias")
RESAMPLE = ("resample.1.weight", "resample.1.bias", "time_conv.weight", "time_conv.bias")


# ----------------------------------------------------------------------------- original layout

def is_original_layout(keys: set[str]) -> bool:
  return "encoder.conv1.weight" in keys


def original_to_diffusers(key: str, nrb: int, residual: bool) -> str | None:
  """One original Wan key -> its diffusers key (None when it is not part of a Wan VAE)."""
  top = {"conv1": "quant_conv", "conv2": "post_quant_conv"}
  parts = key.split(".")
  if len(parts) == 2 and parts[0] in top:
    return f"{top[parts[0]]}.{parts[1]}"
  if parts[0] not in ("encoder", "decoder") or len(parts) < 3:
    return None
  side, rest = parts[0], ".".join(parts[1:])
  m = re.fullmatch(r"conv1\.(weight|bias)", rest)
  if m:
    return f"{side}.conv_in.{m[1]}"
  m = re.fullmatch(r"head\.(0\.gamma|2\.weight|2\.bias)", rest)
  if m:
    return f"{side}." + {"0.gamma": "norm_out.gamma", "2.weight": "conv_out.weight",
                         "2.bias": "conv_out.bias"}[m[1]]
  m = re.fullmatch(r"middle\.([012])\.(.+)", rest)
  if m:
    i, leaf = int(m[1]), m[2]
    if i == 1:
      return f"{side}.mid_block.attentions.0.{leaf}" if leaf in ATTENTION else None
    return f"{side}.mid_block.resnets.{i // 2}.{RESIDUAL[leaf]}" if leaf in RESIDUAL else None
  stages = "downsamples" if side == "encoder" else "upsamples"
  m = re.fullmatch(stages + r"\.(\d+)\.(.+)", rest)
  if not m:
    return None
  n, leaf = int(m[1]), m[2]
  blocks = "down_blocks" if side == "encoder" else "up_blocks"
  if residual:  # Wan2.2: stage n holds a Sequential `downsamples`/`upsamples` of resnets + resample
    m = re.fullmatch(stages + r"\.(\d+)\.(.+)", leaf)
    if not m:
      return None
    j, leaf = int(m[1]), m[2]
    n_res = nrb if side == "encoder" else nrb + 1
    if j < n_res:
      return f"{side}.{blocks}.{n}.resnets.{j}.{RESIDUAL[leaf]}" if leaf in RESIDUAL else None
    sampler = "downsampler" if side == "encoder" else "upsampler"
    return f"{side}.{blocks}.{n}.{sampler}.{leaf}" if j == n_res and leaf in RESAMPLE else None
  if side == "encoder":  # Wan2.1 encoder: one flat list, same indices as diffusers
    mapped = RESIDUAL.get(leaf) or (leaf if leaf in RESAMPLE else None)
    return f"encoder.down_blocks.{n}.{mapped}" if mapped else None
  stage, r = divmod(n, nrb + 2)  # Wan2.1 decoder: per stage nrb+1 resnets, then a resample
  if r <= nrb:
    return f"decoder.up_blocks.{stage}.resnets.{r}.{RESIDUAL[leaf]}" if leaf in RESIDUAL else None
  return f"decoder.up_blocks.{stage}.upsamplers.0.{leaf}" if leaf in RESAMPLE else None


def infer_original_config(reader: TensorReader) -> dict:
  """The diffusers-style config of an original-layout file, from its keys and shapes."""
  from wildactor_jax.models.vae_stats import default_latent_stats
  keys = reader.keys()

  def shape(key):
    if key not in keys:
      raise ConversionError(f"original Wan VAE layout: missing key {key}")
    return reader.get(key).shape  # a memmap view: no data is read

  residual = any(k.startswith("encoder.downsamples.0.downsamples.") for k in keys)
  z_dim = shape("conv2.weight")[0]
  base_dim, in_channels = shape("encoder.conv1.weight")[:2]
  out_channels, dec_last = shape("decoder.head.2.weight")[:2]
  patch = {3: None, 12: 2}.get(in_channels, -1)
  if patch == -1:
    raise ConversionError(f"encoder.conv1.weight: {in_channels} input channels, expected 3 "
                          "(Wan2.1) or 12 (Wan2.2)")
  enc = [k.split(".") for k in keys if k.startswith("encoder.downsamples.")]
  if residual:
    n_stages = 1 + max(int(p[2]) for p in enc)
    nrb = len({p[4] for p in enc if p[2] == "0" and p[5] == "residual"})
    first_res = [f"encoder.downsamples.{i}.downsamples.0" for i in range(n_stages)]
    resamples = [f"encoder.downsamples.{i}.downsamples.{nrb}" for i in range(n_stages - 1)]
  else:
    resample_idx = sorted({int(p[2]) for p in enc if p[3] == "resample"})
    nrb = resample_idx[0] if resample_idx else 1 + max(int(p[2]) for p in enc)
    n_stages = len(resample_idx) + 1
    first_res = [f"encoder.downsamples.{i * (nrb + 1)}" for i in range(n_stages)]
    resamples = [f"encoder.downsamples.{i}" for i in resample_idx]
  widths = [shape(f"{p}.residual.6.weight")[0] for p in first_res]
  if any(w % base_dim for w in widths) or dec_last % (widths[0] // base_dim):
    raise ConversionError(f"original Wan VAE layout: stage widths {widths} are not multiples "
                          f"of the base width {base_dim}")
  dim_mult = [w // base_dim for w in widths]
  mean, std = default_latent_stats(z_dim)
  return dict(
      base_dim=base_dim, decoder_base_dim=dec_last // dim_mult[0], z_dim=z_dim,
      dim_mult=dim_mult, num_res_blocks=nrb, attn_scales=[],
      temperal_downsample=[f"{p}.time_conv.weight" in keys for p in resamples],
      is_residual=residual, in_channels=in_channels, out_channels=out_channels,
      patch_size=patch, latents_mean=list(mean), latents_std=list(std))


# ----------------------------------------------------------------------------- our tree

def diffusers_key(path: tuple) -> str:
  """Our parameter path -> the diffusers state-dict key it comes from."""
  names = []
  for p in path:
    names.append({"kernel": "weight", "resample": "resample.1"}.get(p, str(p)) if
                 isinstance(p, str) else str(p))
  return ".".join(names)


def to_ours(value: np.ndarray, target: tuple[int, ...], key: str) -> np.ndarray:
  """A torch tensor -> our layout: conv kernels to (..., in, out), 1x1 convs to (in, out)."""
  value = np.asarray(value)
  if len(target) == 5 and value.ndim == 5:
    value = value.transpose(2, 3, 4, 1, 0)
  elif len(target) == 4 and value.ndim == 4:
    value = value.transpose(2, 3, 1, 0)
  elif len(target) == 2 and value.ndim >= 2 and all(d == 1 for d in value.shape[2:]):
    value = value.reshape(value.shape[:2]).T
  elif len(target) == 1 and value.size == int(np.prod(target)):
    value = value.reshape(target)  # gamma (C, 1, 1[, 1]) -> (C,)
  if tuple(value.shape) != tuple(target):
    raise ConversionError(f"{key}: shape {tuple(value.shape)} does not fit the config "
                          f"(expected {tuple(target)} in our layout)")
  return value


def _flatten(tree, prefix=()):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _flatten(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def convert(src: str, out: str, dtype: str) -> dict:
  from wildactor_jax.models.vae import VAEConfig, abstract_params
  files = safetensors_files(src)
  reader = TensorReader(files)
  keys = reader.keys()
  if is_original_layout(keys):
    layout = "original"
    config = infer_original_config(reader)
    nrb, residual = config["num_res_blocks"], config["is_residual"]
    source_of = {}
    unknown = []
    for k in sorted(keys):
      d = original_to_diffusers(k, nrb, residual)
      (unknown.append(k) if d is None else source_of.__setitem__(d, k))
  elif "encoder.conv_in.weight" in keys:
    layout = "diffusers"
    folder = source_folder(src)
    config = read_json(fs.join(folder, "config.json"),
                       "config.json (diffusers-layout weights need their AutoencoderKLWan config)")
    if config.get("_class_name", "AutoencoderKLWan") != "AutoencoderKLWan":
      raise ConversionError(
          f"{folder}: config is for {config['_class_name']}, not AutoencoderKLWan")
    source_of, unknown = {k: k for k in keys}, []
  else:
    raise ConversionError(f"{src}: not a Wan VAE (neither encoder.conv_in.weight nor "
                          "encoder.conv1.weight found)")
  try:
    cfg = VAEConfig.from_dict(config)
  except (TypeError, ValueError) as e:
    raise ConversionError(f"{src}: unsupported VAE config ({e})") from None

  targets = {diffusers_key(path): (path, s.shape)
             for path, s in _flatten(abstract_params(cfg, np.float32))}
  check_keys(set(targets), set(source_of) | {f"<unmapped> {k}" for k in unknown},
             f"{src} ({layout} layout, {'Wan2.2' if cfg.is_residual else 'Wan2.1'}-style)")

  for dkey, (_, shape) in targets.items():  # shapes first (memmap views: no data is read)
    to_ours(reader.get(source_of[dkey]), tuple(shape), source_of[dkey])

  def build(tree):
    for dkey, (path, shape) in targets.items():
      tree.put(path, to_ours(reader.get(source_of[dkey]), tuple(shape), source_of[dkey]))
    return cfg.to_dict()

  write_checkpoint(out, build, dtype)
  n_params = sum(int(np.prod(s)) for _, s in targets.values())
  return dict(layout=layout, variant="wan2.2" if cfg.is_residual else "wan2.1",
              z_dim=cfg.z_dim, spatial_factor=cfg.spatial_factor,
              temporal_factor=cfg.temporal_factor, tensors=len(targets), params=n_params)
