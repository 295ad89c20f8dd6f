"""End-to-end parity of `inference.generate` with diffusers' `WanPipeline`.

Tiny random Wan transformer and Wan2.2-style VAE (non-trivial latent statistics), both converted by
our CLI; the same initial noise and the same text embeddings (cond and uncond) go into both
pipelines, with no references. This covers everything between the embeddings and the pixels: the
timestep scale and shift, UniPC, classifier-free guidance, latent (un)normalisation and VAE
decode. A bug here would reach real weights even where every module matches on its own.
"""
from __future__ import annotations

import io
from contextlib import redirect_stdout

import numpy as np
import pytest

from conftest import require_test_extra  # noqa: E402

torch = require_test_extra("torch")
diffusers = require_test_extra("diffusers")

import jax.numpy as jnp  # noqa: E402

from wildactor_jax import inference, models  # noqa: E402
from wildactor_jax.convert.__main__ import main as convert_cli  # noqa: E402
from wildactor_jax.testing import wan_oracle  # noqa: E402

# Wan2.2 style: 2x2 patchify inside the VAE (spatial factor 16), z8, per-channel statistics.
VAE = dict(base_dim=8, decoder_base_dim=12, z_dim=8, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
           temperal_downsample=[False, True, True], is_residual=True, in_channels=12,
           out_channels=12, patch_size=2, scale_factor_spatial=16,
           latents_mean=[0.1 * i - 0.3 for i in range(8)],
           latents_std=[0.5 + 0.1 * i for i in range(8)])
FRAMES, HEIGHT, WIDTH, TEXT_LEN = 5, 64, 64, 12


class FixedEmbeddings:
  """Stands in for the UMT5 wrapper: returns given [cond; uncond] embeddings (Wan's convention:
  zero past each prompt's length, no mask in cross-attention)."""

  def __init__(self, cond: np.ndarray, uncond: np.ndarray):
    self.embeds = np.stack([cond, uncond])

  def encode(self, prompts):
    assert len(prompts) == 2
    return self.embeds, np.any(self.embeds != 0, axis=-1)


def _convert(kind, folder, out):
  with redirect_stdout(io.StringIO()):
    assert convert_cli(["--kind", kind, "--src", str(folder), "--out", str(out),
                        "--dtype", "float32"]) == 0


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
  root = tmp_path_factory.mktemp("parity")
  tm = wan_oracle.make_wan(seed=3, in_channels=8, out_channels=8, text_dim=24)
  wan_oracle.save_diffusers(tm, root / "transformer")
  _convert("transformer", root / "transformer", root / "ckpt")
  torch.manual_seed(4)
  tv = diffusers.AutoencoderKLWan(**VAE).eval()
  with torch.no_grad():
    for name, p in tv.named_parameters():
      if name.endswith("gamma"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
  tv.save_pretrained(root / "vae", safe_serialization=True)
  _convert("vae", root / "vae", root / "vae_ckpt")
  return dict(torch_transformer=tm, torch_vae=tv, model=models.load_backbone(str(root / "ckpt")),
              vae=models.load_vae(str(root / "vae_ckpt")))


def _inputs(seed):
  rng = np.random.default_rng(seed)
  grid = inference.check_geometry(
      inference.GenerationSettings(frames=FRAMES, height=HEIGHT, width=WIDTH), _Geometry, (1, 2, 2))
  noise = rng.standard_normal((1,) + grid + (8,)).astype(np.float32)
  cond = rng.standard_normal((TEXT_LEN, 24)).astype(np.float32)
  uncond = rng.standard_normal((TEXT_LEN, 24)).astype(np.float32)
  cond[7:], uncond[3:] = 0.0, 0.0  # prompts of 7 and 3 tokens, zero-padded as Wan does
  return noise, cond, uncond


class _Geometry:
  temporal_factor, spatial_factor = 4, 16


def _diffusers_video(p, noise, cond, uncond, steps, cfg, shift, output_type):
  sched = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                            num_train_timesteps=1000, flow_shift=shift)
  pipe = diffusers.WanPipeline(tokenizer=None, text_encoder=None, transformer=p["torch_transformer"],
                               vae=p["torch_vae"], scheduler=sched)
  pipe.set_progress_bar_config(disable=True)
  latents = torch.from_numpy(np.ascontiguousarray(noise.transpose(0, 4, 1, 2, 3)))
  with torch.no_grad():
    out = pipe(prompt_embeds=torch.from_numpy(cond[None]),
               negative_prompt_embeds=torch.from_numpy(uncond[None]), latents=latents,
               height=HEIGHT, width=WIDTH, num_frames=FRAMES, num_inference_steps=steps,
               guidance_scale=cfg, output_type=output_type).frames
  return np.asarray(out)


@pytest.mark.parametrize("steps,cfg,shift", [(6, 5.0, 5.0), (4, 1.0, 3.0)])
def test_generate_equals_wan_pipeline(pipelines, steps, cfg, shift):
  noise, cond, uncond = _inputs(seed=steps)
  s = inference.GenerationSettings(frames=FRAMES, height=HEIGHT, width=WIDTH, steps=steps, cfg=cfg,
                                   shift=shift, solver="unipc")
  ours, _ = inference.generate(pipelines["model"], pipelines["vae"], FixedEmbeddings(cond, uncond),
                               "a prompt", [], [], s, noise=jnp.asarray(noise))
  # diffusers' "np" output is (B, T, H, W, 3) in [0, 1], clamped; ours is [-1, 1], clipped.
  theirs = _diffusers_video(pipelines, noise, cond, uncond, steps, cfg, shift, "np")[0]
  assert ours.shape == theirs.shape == (FRAMES, HEIGHT, WIDTH, 3)
  assert float(np.std(theirs)) > 1e-3, "degenerate oracle video"
  np.testing.assert_allclose((ours + 1.0) / 2.0, theirs, atol=1e-4, rtol=0)


def test_denoised_latents_equal_wan_pipeline(pipelines):
  """The sampler's output before decoding: normalised latents, compared relative to their size."""
  noise, cond, uncond = _inputs(seed=11)
  s = inference.GenerationSettings(frames=FRAMES, height=HEIGHT, width=WIDTH, steps=5, cfg=4.0,
                                   shift=5.0, solver="unipc")
  table_text = jnp.asarray(np.stack([cond, uncond]))
  ours = np.asarray(inference.denoise(pipelines["model"], table_text, None, jnp.asarray(noise), s))
  theirs = _diffusers_video(pipelines, noise, cond, uncond, 5, 4.0, 5.0, "latent")
  theirs = theirs.transpose(0, 2, 3, 4, 1)
  err = np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)
  assert err < 1e-5, err
