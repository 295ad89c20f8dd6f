"""Training the demo's learned video autoencoder (models/video_autoencoder.py) on rendered clips.

    python -m wildactor_jax.demo.autoencoder --raw CORPUS --out autoencoder.npz [--steps 1500]
    python -m wildactor_jax.demo.autoencoder --raw CORPUS --finetune-decoder FROM.npz \
        --out autoencoder.npz --steps 800 [--detail-weight 5]

A beta-VAE objective, as Wan's VAE is a Gaussian VAE: L1 + L2 reconstruction of random 9-frame
windows of the clips (so latent 0 also learns frames that are not a clip's first, as continuation
re-encodes them) and of single reference images (references are encoded as one latent frame),
plus a small KL term that keeps the latent space smooth for the DiT. Afterwards the latents of the
training clips give the per-channel statistics `encode` normalises by (Wan keeps them in its
config). Deterministic under the seed.

`--finetune-decoder` then trains the decoder alone, as Stable Diffusion's VAE decoder was
fine-tuned after the fact: the encoder, and so the latent space and everything trained on it,
stay exactly as they are. Plain MSE spends the decoder on the background (most of the pixels);
the figure, a few pixels wide, is what identity and motion live in. So pixels that differ from
their 15-pixel median neighbourhood (thin structures: limbs, faces, clothes) weigh 1 +
detail_weight. Measured on the demo (benchmarks/results/README.md): the held-out real clips
through the autoencoder are retrieved 0.85 of the time instead of 0.73.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from wildactor_jax.models import video_autoencoder as vae_lib

WINDOW = 9  # frames per training window: latent 0 and two 4-frame groups
STORAGE_DTYPE = "float16"  # the shipped file's weights (half the bytes; the model IS the rounded one)


def read_media(raw: str, max_clips: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The raw folder's clips (uint8 (N, T, H, W, 3)) and reference images resized to the frame
  size (uint8 (M, H, W, 3))."""
  from PIL import Image
  from wildactor_jax.eval import raw as raw_lib
  ds = raw_lib.load(raw)
  clips = [raw_lib.read_video(c.video) for c in ds.clips[:max_clips]]
  size = clips[0].shape[1:3]
  images = []
  for actor in sorted({c.actor for c in ds.clips[:max_clips]}):
    for ref in ds.refs.get(actor, []):
      im = Image.fromarray(raw_lib.read_image(ref.path))
      images.append(np.asarray(im.resize(size[::-1], Image.BILINEAR)))
  return np.stack(clips), np.stack(images)


def kl_divergence(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu, exp(logvar)) || N(0, 1)), mean over elements."""
  return 0.5 * jnp.mean(jnp.square(mu) + jnp.exp(logvar) - 1.0 - logvar)


def reconstruction_loss(x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(y - x)) + jnp.mean(jnp.square(y - x))


def vae_loss(model, video, key, kl_weight: float):
  mu, logvar = model.moments(video)
  z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
  rec = reconstruction_loss(video, model.reconstruct(z))
  return rec + kl_weight * kl_divergence(mu, logvar), rec


def _batch(clips, images, rng: np.random.Generator, batch: int):
  """Random 9-frame windows and single images, in [-1, 1], randomly mirrored."""
  idx = rng.integers(0, len(clips), batch)
  starts = rng.integers(0, clips.shape[1] - WINDOW + 1, batch)
  video = np.stack([clips[i, s:s + WINDOW] for i, s in zip(idx, starts)])
  still = images[rng.integers(0, len(images), batch // 2)][:, None]
  flip = lambda a: np.where(rng.random(len(a))[:, None, None, None, None] < 0.5, a[:, :, :, ::-1], a)
  to_unit = lambda a: a.astype(np.float32) / 127.5 - 1.0
  return to_unit(flip(video)), to_unit(flip(still))


def train(clips: np.ndarray, images: np.ndarray, cfg=vae_lib.AutoencoderConfig(), steps: int = 1500,
          batch: int = 16, learning_rate: float = 2e-3, kl_weight: float = 2e-5, seed: int = 0,
          log=None) -> vae_lib.VideoAutoencoder:
  if clips.shape[1] < WINDOW:
    raise ValueError(f"clips of {clips.shape[1]} frames: expected at least {WINDOW}")
  model = vae_lib.init(cfg, seed)
  warmup = min(50, steps // 4)
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, max(steps, warmup + 1))
  opt = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=1e-4), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt, video, still, key):
    k1, k2 = jax.random.split(key)

    def loss_fn(model):
      lv, rv = vae_loss(model, video, k1, kl_weight)
      li, ri = vae_loss(model, still, k2, kl_weight)
      return lv + 0.5 * li, (rv, ri)

    (loss, (rv, ri)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    opt.update(model, grads)
    return loss, rv, ri

  rng = np.random.default_rng(seed)
  key = jax.random.key(seed)
  for i in range(steps):
    video, still = _batch(clips, images, rng, batch)
    loss, rv, ri = step(model, opt, jnp.asarray(video), jnp.asarray(still),
                        jax.random.fold_in(key, i))
    if log is not None and (i % 100 == 0 or i == steps - 1):
      log(i, float(loss), float(rv), float(ri))
  return model


DETAIL_SIZE, DETAIL_THRESHOLD = 15, 0.08  # median window (px); |pixel - median| in [-1, 1] units


def detail_weights(x: np.ndarray, detail_weight: float) -> np.ndarray:
  """(B, T, H, W, 3) in [-1, 1] -> (B, T, H, W, 1): 1 + detail_weight where a pixel differs from
  its DETAIL_SIZE median neighbourhood by more than DETAIL_THRESHOLD in any channel."""
  from scipy import ndimage
  med = ndimage.median_filter(x, size=(1, 1, DETAIL_SIZE, DETAIL_SIZE, 1))
  detail = np.abs(x - med).max(axis=-1, keepdims=True) > DETAIL_THRESHOLD
  return (1.0 + detail_weight * detail).astype(np.float32)


def weighted_reconstruction_loss(x: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
  e = y - x
  return jnp.sum(w * (jnp.abs(e) + jnp.square(e))) / (jnp.sum(w) * x.shape[-1])


def is_decoder(path, value) -> bool:
  return isinstance(value, nnx.Param) and str(path[0]).startswith("dec_")


def finetune_decoder(model: vae_lib.VideoAutoencoder, clips: np.ndarray, images: np.ndarray,
                     steps: int = 800, batch: int = 16, learning_rate: float = 5e-4,
                     detail_weight: float = 5.0, seed: int = 0,
                     log=None) -> vae_lib.VideoAutoencoder:
  """Trains the decoder (dec_* parameters) on the encoder's posterior means, detail-weighted;
  the encoder and the latent statistics are untouched."""
  warmup = min(30, steps // 4)
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, max(steps, warmup + 1))
  decoder = nnx.All(nnx.Param, is_decoder)
  opt = nnx.Optimizer(model, optax.adam(schedule), wrt=decoder)

  @nnx.jit
  def step(model, opt, video, w_video, still, w_still):
    def loss_fn(model):
      total = 0.0
      for x, w, c in ((video, w_video, 1.0), (still, w_still, 0.5)):
        mu, _ = model.moments(x)
        total = total + c * weighted_reconstruction_loss(
            x, model.reconstruct(jax.lax.stop_gradient(mu)), w)
      return total

    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, decoder))(model)
    opt.update(model, grads)
    return loss

  rng = np.random.default_rng(seed)
  for i in range(steps):
    video, still = _batch(clips, images, rng, batch)
    loss = step(model, opt, jnp.asarray(video), jnp.asarray(detail_weights(video, detail_weight)),
                jnp.asarray(still), jnp.asarray(detail_weights(still, detail_weight)))
    if log is not None and (i % 100 == 0 or i == steps - 1):
      log(i, float(loss))
  return model


def latent_stats(model: vae_lib.VideoAutoencoder, clips: np.ndarray, batch: int = 32):
  """Per-channel mean and std of the un-normalised posterior means over the clips."""
  frames = 1 + 4 * ((clips.shape[1] - 1) // 4)
  mus = []
  for lo in range(0, len(clips), batch):
    video = jnp.asarray(clips[lo:lo + batch, :frames].astype(np.float32) / 127.5 - 1.0)
    mus.append(np.asarray(jax.jit(lambda v: model.moments(v)[0])(video)).reshape(-1, model.z_dim))
  mu = np.concatenate(mus)
  return mu.mean(axis=0), np.maximum(mu.std(axis=0), 1e-3)


def round_to_storage(model: vae_lib.VideoAutoencoder, dtype: str) -> vae_lib.VideoAutoencoder:
  """The weights rounded to the storage dtype in place: the model is then the one the file
  holds."""
  state = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(lambda v: jnp.asarray(v, dtype).astype(jnp.float32), state))
  return model


def finalise(model: vae_lib.VideoAutoencoder, clips: np.ndarray,
             dtype: str = "float16") -> vae_lib.VideoAutoencoder:
  """Rounds the weights to the storage dtype FIRST, then measures the latent statistics with the
  rounded weights: the file then holds exactly the model the statistics describe."""
  model = round_to_storage(model, dtype)
  return vae_lib.with_stats(model, *latent_stats(model, clips))


def reconstruction_error(model: vae_lib.VideoAutoencoder, clips: np.ndarray) -> float:
  """Mean absolute pixel error (0..255 scale) of encode -> decode over the clips."""
  frames = 1 + 4 * ((clips.shape[1] - 1) // 4)
  errs = []
  for lo in range(0, len(clips), 32):
    x = clips[lo:lo + 32, :frames].astype(np.float32) / 127.5 - 1.0
    y = np.asarray(model.decode(model.encode(x)))
    errs.append(np.abs(y - x).mean() * 127.5)
  return float(np.mean(errs))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m wildactor_jax.demo.autoencoder",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--raw", required=True, help="rendered synthetic actors (data/synthetic_actors.py)")
  p.add_argument("--out", required=True, help="output .npz")
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max-clips", type=int, default=None)
  p.add_argument("--finetune-decoder", metavar="FROM",
                 help="an autoencoder .npz whose decoder alone is trained (encoder and latent "
                      "statistics kept)")
  p.add_argument("--detail-weight", type=float, default=5.0,
                 help="--finetune-decoder: extra weight of thin-structure pixels")
  args = p.parse_args(argv)
  from wildactor_jax import fs
  if args.finetune_decoder and not fs.exists(args.finetune_decoder):
    p.error(f"--finetune-decoder {args.finetune_decoder}: no such file")
  if args.steps < 1 or args.detail_weight < 0:
    p.error("--steps: expected >= 1; --detail-weight: expected >= 0")
  t0 = time.time()
  clips, images = read_media(args.raw, args.max_clips)
  held = clips[-64:]  # a few clips kept out of training to report the reconstruction error
  log = lambda i, l, rv, ri: print(f"step {i} loss {l:.4f} video {rv:.4f} image {ri:.4f}",
                                   file=sys.stderr, flush=True)
  if args.finetune_decoder:
    model = finetune_decoder(vae_lib.load(args.finetune_decoder), clips[:-64], images,
                             steps=args.steps, batch=args.batch, seed=args.seed,
                             detail_weight=args.detail_weight,
                             log=lambda i, l: print(f"step {i} weighted loss {l:.4f}",
                                                    file=sys.stderr, flush=True))
    model = round_to_storage(model, STORAGE_DTYPE)  # the statistics stay the encoder's
  else:
    model = train(clips[:-64], images, steps=args.steps, batch=args.batch, seed=args.seed,
                  log=log)
    model = finalise(model, clips[:-64], STORAGE_DTYPE)
  vae_lib.save(model, args.out, STORAGE_DTYPE)
  print(json.dumps({"out": args.out, "steps": args.steps, "clips": int(len(clips) - 64),
                    "images": int(len(images)), "seconds": round(time.time() - t0, 1),
                    "held_out_mae_255": round(reconstruction_error(model, held), 2)}), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
