"""Why a toy backbone sampled colour noise: memorise a few clips, then compare one-step data
predictions with whole sampling trajectories (our UniPC and Euler) and an exact denoiser.

    python -m benchmarks.bench_sampling_diagnosis --raw RAW [--clips 1 --steps 300 --lr 5e-3
        --shift 3 --latents-mean 0 --latents-std 1 --out sheet.png]

RAW is a synthetic-actor folder (`python data/synthetic_actors.py`). The model is the demo's toy
backbone (configs/demo_tiny.py:backbone) on the pixel autoencoder. Prints one JSON line: the
loss, the one-step x0 error by flow time next to the noisy input's, and the sampled clips' error
to the nearest training clip in pixel units (the exact denoiser reaches ~0: the sampler is right).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from wildactor_jax import inference, media
from wildactor_jax.config_lib import load_config_file
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import create_model
from wildactor_jax.models.pixel_autoencoder import PixelAutoencoder
from wildactor_jax.train_lib import flow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--raw", required=True)
  p.add_argument("--clips", type=int, default=1)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--lr", type=float, default=5e-3)
  p.add_argument("--shift", type=float, default=3.0)
  p.add_argument("--latents-mean", type=float, default=0.0)
  p.add_argument("--latents-std", type=float, default=1.0)
  p.add_argument("--out", help="contact sheet: ground truth, then a UniPC and an Euler sample")
  args = p.parse_args(argv)
  cfg = load_config_file(os.path.join(ROOT, "configs", "demo_tiny.py:backbone"))
  model = create_model(ModelConfig.from_mapping(cfg.model), seed=0)
  vae = PixelAutoencoder(2, args.latents_mean, args.latents_std)
  paths = sorted(glob.glob(os.path.join(args.raw, "clips", "*.mp4")))[:args.clips]
  video = np.stack([media.read_mp4(c) for c in paths]).astype(np.float32) / 127.5 - 1
  x0all = jnp.asarray(vae.encode(video))
  s_len, d = int(cfg.text_encoder.max_length), int(cfg.model.text_dim)
  text = jnp.zeros((1, s_len, d))
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(optax.linear_schedule(0.0, args.lr, 50), weight_decay=0.01))
  graphdef, params = nnx.split(model, nnx.Param)
  opt = tx.init(params)
  b = 8

  @jax.jit
  def step(params, opt, key):
    k1, k2, k3 = jax.random.split(key, 3)
    x0 = x0all[jax.random.randint(k1, (b,), 0, x0all.shape[0])]
    t = flow.sample_timesteps(k2, b, args.shift)
    noise = jax.random.normal(k3, x0.shape)

    def loss_fn(p):
      tf = flow.frame_timesteps(t, x0.shape[1], jnp.zeros((b,), bool))
      pred = nnx.merge(graphdef, p)(flow.interpolate(x0, noise, tf), flow.model_timesteps(tf),
                                   jnp.broadcast_to(text, (b, s_len, d)))
      return jnp.mean((pred - flow.velocity_target(x0, noise)) ** 2)

    loss, g = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  key, t0, losses = jax.random.key(0), time.time(), []
  for _ in range(args.steps):
    key, k = jax.random.split(key)
    params, opt, loss = step(params, opt, k)
    losses.append(float(loss))
  model = nnx.merge(graphdef, params)
  text2 = jnp.concatenate([text, text])
  result = {"clips": args.clips, "steps": args.steps, "lr": args.lr, "shift": args.shift,
            "latents_std": args.latents_std, "train_s": round(time.time() - t0, 1),
            "loss_last20": float(np.mean(losses[-20:])), "one_step": {}, "sampled_mse_pixels": {}}
  pix = args.latents_std ** 2  # latent mse -> pixel mse
  for sigma in (0.05, 0.2, 0.5, 0.8, 0.95):
    noise = jax.random.normal(jax.random.key(1), x0all.shape)
    x = (1 - sigma) * x0all + sigma * noise
    est = inference.predict_x0(model, x, sigma, jnp.broadcast_to(text, (2,) + text.shape[1:]))
    result["one_step"][str(sigma)] = {"x0_mse_pixels": float(jnp.mean((est - x0all) ** 2)) * pix,
                                      "noisy_mse_pixels": float(jnp.mean((x - x0all) ** 2)) * pix}
  strips = [np.concatenate(list(media.to_uint8(video[0])), 1)]
  for solver, n in (("unipc", 25), ("euler", 50)):
    s = inference.GenerationSettings(frames=video.shape[1], height=video.shape[2],
                                     width=video.shape[3], steps=n, cfg=1.0, shift=args.shift,
                                     solver=solver)
    lat = inference.denoise(model, text2, None, jax.random.normal(jax.random.key(0), x0all.shape[1:])[None], s)
    result["sampled_mse_pixels"][solver] = float(jnp.min(jnp.mean((lat - x0all) ** 2, axis=(1, 2, 3, 4)))) * pix
    strips.append(np.concatenate(list(media.to_uint8(np.asarray(vae.decode(lat))[0])), 1))
  if args.out:
    from PIL import Image
    sheet = Image.fromarray(np.concatenate(strips, 0))
    media.write_png(args.out, sheet.resize((sheet.width * 3, sheet.height * 3), Image.NEAREST))
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
