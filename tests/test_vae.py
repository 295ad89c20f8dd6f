"""Wan VAE (2.1 and 2.2 styles): parity with diffusers' AutoencoderKLWan, converter, errors.

Tiny random torch models are saved with `save_pretrained`, converted by our CLI and loaded with
`load_vae`; encode/decode must match PyTorch to relative error < 1e-4 in float32, including
multi-chunk streaming (the causal cache carried through the scan).
"""
from __future__ import annotations

import io
import json
import re
import shutil
from contextlib import redirect_stdout

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import require_test_extra  # noqa: E402

torch = require_test_extra("torch")
diffusers = require_test_extra("diffusers")

from flax import nnx  # noqa: E402

from wildactor_jax.convert.__main__ import main as convert_cli  # noqa: E402
from wildactor_jax.convert.common import ConversionError  # noqa: E402
from wildactor_jax.models.checkpoint_io import read_config, read_params  # noqa: E402
from wildactor_jax.convert.vae import convert  # noqa: E402
from wildactor_jax.models.vae import init_vae, load_vae, save_vae  # noqa: E402
from wildactor_jax.models.vae_tiling import tile_starts, tiled_decode  # noqa: E402

# Wan2.1 style: no patchify, flat down/up lists, 2 res blocks (as released), z16 -> the released
# latent statistics apply (and the original-layout path can be checked against diffusers' own
# Wan2.1 key converter, which hard-codes the released block layout: 2 res blocks, dim_mult 1244).
TINY21 = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
              temperal_downsample=[False, True, True])
# Wan2.2 style: 2x2 patchify (12 channels), residual stages, separate decoder width; 1 res block
# exercises the converter's generality.
TINY22 = dict(base_dim=8, decoder_base_dim=12, z_dim=8, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
              temperal_downsample=[False, True, True], is_residual=True, in_channels=12,
              out_channels=12, patch_size=2, scale_factor_spatial=16,
              latents_mean=[0.1 * i - 0.3 for i in range(8)],
              latents_std=[0.5 + 0.1 * i for i in range(8)])
SIZE = 32


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def build_torch(cfg, seed):
  torch.manual_seed(seed)
  model = diffusers.AutoencoderKLWan(**cfg).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("gamma"):  # default ones would hide a transposed/mis-mapped norm
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
  return model


@pytest.fixture(scope="module")
def variant(request, tmp_path_factory):
  """The converted tiny model of one style (parametrised indirectly: "wan21" or "wan22")."""
  cfg = TINY21 if request.param == "wan21" else TINY22
  tm = build_torch(cfg, seed=0 if request.param == "wan21" else 1)
  root = tmp_path_factory.mktemp(request.param)
  tm.save_pretrained(root / "diffusers", safe_serialization=True)
  out = io.StringIO()
  with redirect_stdout(out):
    rc = convert_cli(["--kind", "vae", "--src", str(root / "diffusers"), "--out",
                      str(root / "ckpt"), "--dtype", "float32"])
  assert rc == 0
  info = json.loads(out.getvalue())
  assert info["layout"] == "diffusers" and info["variant"] == request.param.replace("wan2", "wan2.")
  vae = load_vae(str(root / "ckpt"))
  return dict(name=request.param, cfg=cfg, torch=tm, vae=vae, root=root)


def torch_encode(tm, video):
  """Channels-last video -> normalised latent mean, the way diffusers' Wan pipelines do it."""
  x = torch.from_numpy(np.ascontiguousarray(video.transpose(0, 4, 1, 2, 3)))
  with torch.no_grad():
    mu = tm.encode(x).latent_dist.mode()
  z = mu.shape[1]
  mean = torch.tensor(tm.config.latents_mean).view(1, z, 1, 1, 1)
  std = torch.tensor(tm.config.latents_std).view(1, z, 1, 1, 1)
  return ((mu - mean) / std).numpy().transpose(0, 2, 3, 4, 1)


def torch_decode(tm, latents):
  z = torch.from_numpy(np.ascontiguousarray(latents.transpose(0, 4, 1, 2, 3)))
  c = z.shape[1]
  mean = torch.tensor(tm.config.latents_mean).view(1, c, 1, 1, 1)
  std = torch.tensor(tm.config.latents_std).view(1, c, 1, 1, 1)
  with torch.no_grad():
    video = tm.decode(z * std + mean).sample
  return video.numpy().transpose(0, 2, 3, 4, 1)


# 1 frame (single chunk), 5 frames (first chunk + one scan step), 9 frames (the cache carried
# across scan steps; Wan2.2 only, to keep compile time down).
@pytest.mark.parametrize("variant,frames",
                         [("wan21", 1), ("wan21", 5), ("wan22", 1), ("wan22", 5), ("wan22", 9)],
                         indirect=["variant"])
def test_encode_decode_parity(variant, frames):
  vae, tm = variant["vae"], variant["torch"]
  rng = np.random.default_rng(frames)
  video = rng.uniform(-1, 1, (1, frames, SIZE, SIZE, 3)).astype(np.float32)
  ref = torch_encode(tm, video)
  got = np.asarray(vae.encode(jnp.asarray(video)))
  assert got.shape == ref.shape == (1, 1 + (frames - 1) // 4, SIZE // vae.spatial_factor,
                                    SIZE // vae.spatial_factor, vae.z_dim)
  assert rel_err(got, ref) < 1e-4
  latents = rng.standard_normal(ref.shape).astype(np.float32)
  ref_video = torch_decode(tm, latents)
  got_video = np.asarray(vae.decode(jnp.asarray(latents)))
  assert got_video.shape == ref_video.shape == video.shape
  assert rel_err(got_video, ref_video) < 1e-4


BOTH = pytest.mark.parametrize("variant", ["wan21", "wan22"], indirect=True)


@BOTH
def test_attributes(variant):
  vae = variant["vae"]
  assert vae.temporal_factor == 4
  assert vae.spatial_factor == (8 if variant["name"] == "wan21" else 16)
  assert vae.z_dim == variant["cfg"]["z_dim"]



@pytest.mark.parametrize("variant", ["wan22"], indirect=True)
def test_bfloat16_close_to_float32(variant):
  """bfloat16 parameters and activations (norms in float32) stay close to the float32 model."""
  vae16 = load_vae(str(variant["root"] / "ckpt"), dtype=jnp.bfloat16)
  rng = np.random.default_rng(7)
  video = jnp.asarray(rng.uniform(-1, 1, (1, 1, SIZE, SIZE, 3)), jnp.float32)
  z32, z16 = variant["vae"].encode(video), vae16.encode(video)
  assert z16.dtype == jnp.bfloat16 and rel_err(z16.astype(jnp.float32), z32) < 3e-2
  v32, v16 = variant["vae"].decode(z32), vae16.decode(z32)
  assert rel_err(v16.astype(jnp.float32), v32) < 3e-2

# ----------------------------------------------------------------------------- original layout

RES_INV = {"norm1.gamma": "residual.0.gamma", "conv1.weight": "residual.2.weight",
           "conv1.bias": "residual.2.bias", "norm2.gamma": "residual.3.gamma",
           "conv2.weight": "residual.6.weight", "conv2.bias": "residual.6.bias",
           "conv_shortcut.weight": "shortcut.weight", "conv_shortcut.bias": "shortcut.bias"}


def to_original_key(key, nrb, residual):
  """diffusers key -> original Wan key: the inverse of diffusers' Wan VAE converters
  (`convert_wan_vae_to_diffusers` for 2.1; diffusers' `convert_vae_22` script for 2.2)."""
  fixed = {"quant_conv": "conv1", "post_quant_conv": "conv2"}
  head, _, leaf = key.partition(".")
  if head in fixed:
    return f"{fixed[head]}.{leaf}"
  side, rest = head, leaf
  for a, b in (("conv_in.", "conv1."), ("norm_out.gamma", "head.0.gamma"),
               ("conv_out.", "head.2.")):
    if rest.startswith(a):
      return f"{side}.{b}{rest[len(a):]}"
  m = re.fullmatch(r"mid_block\.resnets\.(\d)\.(.+)", rest)
  if m:
    return f"{side}.middle.{2 * int(m[1])}.{RES_INV[m[2]]}"
  m = re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest)
  if m:
    return f"{side}.middle.1.{m[1]}"
  m = re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest)  # Wan2.2
  if m:
    return f"encoder.downsamples.{m[1]}.downsamples.{m[2]}.{RES_INV[m[3]]}"
  m = re.fullmatch(r"down_blocks\.(\d+)\.downsampler\.(.+)", rest)
  if m:
    return f"encoder.downsamples.{m[1]}.downsamples.{nrb}.{m[2]}"
  m = re.fullmatch(r"up_blocks\.(\d+)\.upsampler\.(.+)", rest)
  if m:
    return f"decoder.upsamples.{m[1]}.upsamples.{nrb + 1}.{m[2]}"
  m = re.fullmatch(r"down_blocks\.(\d+)\.(.+)", rest)  # Wan2.1 flat encoder list
  if m:
    return f"encoder.downsamples.{m[1]}.{RES_INV.get(m[2], m[2])}"
  m = re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest)
  if m:
    if residual:
      return f"decoder.upsamples.{m[1]}.upsamples.{m[2]}.{RES_INV[m[3]]}"
    return f"decoder.upsamples.{int(m[1]) * (nrb + 2) + int(m[2])}.{RES_INV[m[3]]}"
  m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", rest)
  if m:
    return f"decoder.upsamples.{int(m[1]) * (nrb + 2) + nrb + 1}.{m[2]}"
  raise AssertionError(f"unmapped diffusers key {key}")


def write_original(tm, path, residual):
  from safetensors.torch import save_file
  sd = {to_original_key(k, tm.config.num_res_blocks, residual): v.contiguous()
        for k, v in tm.state_dict().items()}
  save_file(sd, str(path))
  return sd


@BOTH
def test_original_layout(variant, tmp_path):
  tm, name = variant["torch"], variant["name"]
  original = write_original(tm, tmp_path / "wan_vae.safetensors", name == "wan22")
  if name == "wan21":  # our inverse mapping agrees with diffusers' own original->diffusers one
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
    back = convert_wan_vae_to_diffusers(original)
    assert set(back) == set(tm.state_dict())
  info = convert(str(tmp_path / "wan_vae.safetensors"), str(tmp_path / "ckpt"), "float32")
  assert info["layout"] == "original" and info["variant"] == name.replace("wan2", "wan2.")
  ours = read_params(str(tmp_path / "ckpt"))
  ref = read_params(str(variant["root"] / "ckpt"))
  jax.tree.map(np.testing.assert_array_equal, ours, ref)
  cfg_ours = read_config(str(tmp_path / "ckpt"))
  cfg_ref = read_config(str(variant["root"] / "ckpt"))
  if name == "wan21":  # z16: the released Wan2.1 statistics, exactly diffusers' defaults
    assert cfg_ours == cfg_ref
  else:  # z8 is no released model: statistics default to identity, the architecture matches
    drop = ("latents_mean", "latents_std")
    assert {k: v for k, v in cfg_ours.items() if k not in drop} == \
        {k: v for k, v in cfg_ref.items() if k not in drop}
    assert cfg_ours["latents_mean"] == [0.0] * 8 and cfg_ours["latents_std"] == [1.0] * 8


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("variant", ["wan22"], indirect=True)
def test_bad_inputs(variant):
  vae = variant["vae"]
  ok = np.zeros((1, 5, SIZE, SIZE, 3), np.float32)
  with pytest.raises(ValueError, match=r"1 \+ 4k frames"):
    vae.encode(ok[:, :4])
  with pytest.raises(ValueError, match="expected 3 channels"):
    vae.encode(np.zeros((1, 5, SIZE, SIZE, 4), np.float32))
  with pytest.raises(ValueError, match=r"values in \[-1, 1\]"):
    vae.encode(ok + 1.01)
  with pytest.raises(ValueError, match="divisible by 16"):
    vae.encode(np.zeros((1, 5, 24, SIZE, 3), np.float32))
  with pytest.raises(ValueError, match="5-D"):
    vae.encode(ok[0])
  with pytest.raises(ValueError, match=r"latents: expected \(B, T, h, w, 8\)"):
    vae.decode(np.zeros((1, 2, 2, 2, 4), np.float32))


def test_pickle_refused(tmp_path):
  (tmp_path / "src").mkdir()
  (tmp_path / "src" / "Wan2.1_VAE.pth").write_bytes(b"not really a pickle")
  with pytest.raises(ConversionError, match="pickled weights are refused"):
    convert(str(tmp_path / "src"), str(tmp_path / "out"), "float32")


@pytest.mark.parametrize("variant", ["wan21"], indirect=True)
def test_missing_and_unknown_keys(variant, tmp_path):
  from safetensors.torch import save_file
  sd = {k: v.contiguous() for k, v in variant["torch"].state_dict().items()}
  src = tmp_path / "src"
  src.mkdir()
  shutil.copy(variant["root"] / "diffusers" / "config.json", src / "config.json")
  gone = sd.pop("decoder.mid_block.attentions.0.proj.weight")
  save_file(sd, str(src / "diffusion_pytorch_model.safetensors"))
  with pytest.raises(ConversionError, match=r"missing 1 keys \['decoder\.mid_block\.attentions"):
    convert(str(src), str(tmp_path / "out"), "float32")
  sd["decoder.mid_block.attentions.0.proj.weight"] = gone
  sd["decoder.extra.weight"] = gone.clone()
  save_file(sd, str(src / "diffusion_pytorch_model.safetensors"))
  with pytest.raises(ConversionError, match=r"unknown 1 keys \['decoder\.extra\.weight'\]"):
    convert(str(src), str(tmp_path / "out"), "float32")
  assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- no-torch paths

def test_random_init_save_load_roundtrip(tmp_path):
  model = init_vae(dict(TINY22, z_dim=48, latents_mean=None, latents_std=None), seed=3)
  config = save_vae(model, str(tmp_path / "ckpt"))
  assert config["latents_std"][:2] == [0.4765, 1.0364]  # z48: the released Wan2.2 statistics
  loaded = load_vae(str(tmp_path / "ckpt"))
  a = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  b = nnx.to_pure_dict(nnx.state(loaded, nnx.Param))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert loaded.z_dim == 48 and loaded.spatial_factor == 16


def test_tiled_decode_blending():
  """With a pointwise 'decoder' (each latent pixel -> an s x s block), tiles blend seamlessly."""
  scale = 4
  proj = jnp.asarray(np.random.default_rng(0).standard_normal((6, 3)), jnp.float32)

  def fake_decode(z):
    x = jnp.repeat(jnp.repeat(z @ proj, scale, axis=2), scale, axis=3)
    return jnp.repeat(x, 2, axis=1)

  latents = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 7, 10, 6)), jnp.float32)
  full = fake_decode(latents)
  tiled = tiled_decode(fake_decode, latents, (4, 4), (2, 1), scale)
  np.testing.assert_allclose(np.asarray(tiled), np.asarray(full), rtol=1e-6, atol=1e-6)
  assert tile_starts(10, 4, 1) == [0, 3, 6]
  assert tile_starts(7, 4, 2) == [0, 2, 3]
  assert tile_starts(3, 4, 2) == [0]
