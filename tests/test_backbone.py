"""The Wan backbone against diffusers: conversion (both layouts), numerics, sharding, errors."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wildactor_jax.testing import wan_oracle
from wildactor_jax import models
from wildactor_jax.convert.__main__ import main as convert_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rel_err(a, b):
  return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def convert(src, out):
  assert convert_main(["--src", src, "--out", out, "--dtype", "float32"]) == 0
  return out


CASES = [
    # (name, diffusers overrides, latent shape (B,T,H,W), timestep kind)
    ("ti2v_per_token", dict(in_channels=48, out_channels=48), (1, 3, 4, 6), "per_token"),
    ("t2v_batch2_odd", dict(), (2, 5, 6, 4), "per_sample"),
    ("no_cross_norm", dict(cross_attn_norm=False, num_layers=3), (1, 1, 2, 8), "per_sample"),
]


@pytest.mark.parametrize("name,overrides,shape,tkind", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_parity_with_diffusers(tmp_path, name, overrides, shape, tkind, layout):
  torch_model = wan_oracle.make_wan(seed=len(name), **overrides)
  src = str(tmp_path / "src")
  if layout == "diffusers":
    wan_oracle.save_diffusers(torch_model, src)
  else:
    wan_oracle.save_original(torch_model, src)
  model = models.load_backbone(convert(src, str(tmp_path / "ckpt")))
  rng = np.random.default_rng(0)
  b, t, h, w = shape
  c = torch_model.config.in_channels
  latents = rng.standard_normal((b, t, h, w, c), dtype=np.float32)
  tokens = t * (h // 2) * (w // 2)
  if tkind == "per_token":  # Wan2.2-TI2V style: first latent frame clean, the rest at t
    ts = np.full((b, tokens), 731.0, np.float32)
    ts[:, : (h // 2) * (w // 2)] = 0.0
  else:
    ts = rng.uniform(0, 1000, (b,)).astype(np.float32)
  text = rng.standard_normal((b, 7, torch_model.config.text_dim), dtype=np.float32)
  expected = wan_oracle.torch_forward(torch_model, latents, ts, text)
  got = model(jnp.asarray(latents), jnp.asarray(ts), jnp.asarray(text))
  assert got.shape == expected.shape
  assert rel_err(got, expected) < 1e-4


def test_original_layout_without_config_infers_from_shapes(tmp_path):
  torch_model = wan_oracle.make_wan(num_attention_heads=1, attention_head_dim=128, ffn_dim=64,
                                    num_layers=1)
  src = wan_oracle.save_original(torch_model, str(tmp_path / "src"), with_config=False)
  out = convert(src, str(tmp_path / "ckpt"))
  cfg = json.load(open(os.path.join(out, "config.json")))
  assert (cfg["dim"], cfg["num_heads"], cfg["num_layers"], cfg["ffn_dim"]) == (128, 1, 1, 64)


def test_per_frame_timesteps_equal_per_token(tmp_path):
  torch_model = wan_oracle.make_wan()
  model = models.load_backbone(convert(wan_oracle.save_diffusers(torch_model, str(tmp_path / "s")),
                                       str(tmp_path / "c")))
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((1, 3, 4, 4, 8), dtype=np.float32))
  text = jnp.asarray(rng.standard_normal((1, 5, 24), dtype=np.float32))
  per_frame = jnp.asarray([[0.0, 400.0, 400.0]])
  per_token = jnp.repeat(per_frame, 4, axis=1)
  np.testing.assert_allclose(model(x, per_frame, text), model(x, per_token, text), rtol=1e-6,
                             atol=1e-6)


def test_sharded_forward_equals_single_device(tmp_path):
  from wildactor_jax import sharding
  torch_model = wan_oracle.make_wan(num_attention_heads=4, attention_head_dim=16, ffn_dim=64)
  ckpt = convert(wan_oracle.save_diffusers(torch_model, str(tmp_path / "s")), str(tmp_path / "c"))
  rng = np.random.default_rng(2)
  x = rng.standard_normal((2, 3, 4, 4, 8), dtype=np.float32)
  ts = np.array([10.0, 900.0], np.float32)
  text = rng.standard_normal((2, 6, 24), dtype=np.float32)
  single = models.load_backbone(ckpt)(jnp.asarray(x), jnp.asarray(ts), jnp.asarray(text))
  mesh = sharding.create_mesh((1, 2, 2, 2))  # data, fsdp, context, tensor over 8 devices
  rules = sharding.DEFAULT_RULES
  model = models.load_backbone(ckpt, mesh=mesh, rules=rules)
  kernel = model.blocks.ffn_in.kernel[...]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  from flax import nnx

  @nnx.jit
  def fwd(m, x, ts, text):
    with sharding.activation_sharding(mesh, rules):
      return m(x, ts, text)

  batch = jax.sharding.NamedSharding(mesh, sharding.logical_to_spec(("batch",), rules))
  out = fwd(model, jax.device_put(x, batch), jax.device_put(ts, batch), jax.device_put(text, batch))
  np.testing.assert_allclose(np.asarray(out), np.asarray(single), rtol=2e-5, atol=2e-5)


def test_bfloat16_checkpoint_and_compute(tmp_path):
  torch_model = wan_oracle.make_wan()
  src = wan_oracle.save_diffusers(torch_model, str(tmp_path / "s"))
  out = str(tmp_path / "c")
  assert convert_main(["--src", src, "--out", out, "--dtype", "bfloat16"]) == 0
  model = models.load_backbone(out, dtype="bfloat16")
  assert model.blocks.attn1.to_q.kernel[...].dtype == jnp.bfloat16
  rng = np.random.default_rng(3)
  x = rng.standard_normal((1, 2, 4, 4, 8), dtype=np.float32)
  ts = np.array([500.0], np.float32)
  text = rng.standard_normal((1, 5, 24), dtype=np.float32)
  expected = wan_oracle.torch_forward(torch_model, x, ts, text)
  got = model(jnp.asarray(x), jnp.asarray(ts), jnp.asarray(text))
  assert rel_err(got.astype(jnp.float32), expected) < 5e-2


def test_refuses_pickled_weights(tmp_path, capsys):
  src = tmp_path / "pt"
  src.mkdir()
  (src / "diffusion_pytorch_model.bin").write_bytes(b"not really a pickle")
  assert convert_main(["--src", str(src), "--out", str(tmp_path / "o")]) == 2
  assert "pickled weights are refused" in capsys.readouterr().err
  assert not (tmp_path / "o").exists()


def test_missing_and_unknown_keys_are_listed(tmp_path, capsys):
  from safetensors.torch import save_file
  torch_model = wan_oracle.make_wan()
  sd = {k: v.contiguous() for k, v in torch_model.state_dict().items()}
  sd.pop("blocks.1.attn2.to_k.weight")
  sd["blocks.0.mystery.weight"] = sd["proj_out.bias"].clone()
  src = tmp_path / "s"
  src.mkdir()
  save_file(sd, str(src / "model.safetensors"))
  assert convert_main(["--src", str(src), "--out", str(tmp_path / "o")]) == 2
  err = capsys.readouterr().err
  assert "blocks.1.attn2.to_k.weight" in err and "blocks.0.mystery.weight" in err
  assert not (tmp_path / "o").exists()


def test_bad_latent_shapes(tmp_path):
  model = models.load_backbone(convert(wan_oracle.save_diffusers(wan_oracle.make_wan(),
                                                                 str(tmp_path / "s")),
                                       str(tmp_path / "c")))
  text = jnp.zeros((1, 3, 24))
  with pytest.raises(ValueError, match="expected \\(B, T, H, W, 8\\)"):
    model(jnp.zeros((1, 2, 4, 4, 5)), jnp.zeros((1,)), text)
  with pytest.raises(ValueError, match="divisible by the patch"):
    model(jnp.zeros((1, 2, 5, 4, 8)), jnp.zeros((1,)), text)
  with pytest.raises(ValueError, match="timesteps shape"):
    model(jnp.zeros((1, 2, 4, 4, 8)), jnp.zeros((1, 7)), text)
