"""Identity embedder: a small conv net trained with an additive angular margin (ArcFace) loss.

It stands in for the ArcFace face recogniser the WildActor paper scores identity with: at our
scale an identity is a synthetic actor's colours and proportions, and the embedder learns them
from the TRAINING actors' ground-truth renders (clip frames and body references), never from
held-out ones. Embeddings are L2-normalised; `features` (before normalisation) feed the
Fréchet distance.

    net = train(images, labels, EmbedderConfig(), seed=0)   # uint8 (N, H, W, 3), int (N,)
    e = embed(net, frames)                                  # (N, dim), unit norm
    save(net, "embedder.npz"); net = load("embedder.npz")

Inputs are resized to `size` x `size`. Training augments with flips, random zoom/shift (frames
show a small figure on a background, references a tight crop: the net must see both scales) and
pixel noise (generated frames are noisy); never with colour changes, since colour is identity.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from PIL import Image

from wildactor_jax.eval import fitting
from wildactor_jax.models import module_npz


@dataclasses.dataclass(frozen=True)
class EmbedderConfig:
  size: int = 32          # input side (px), even
  width: int = 32         # channels of the first conv; doubled at each stride-2 conv
  dim: int = 64           # embedding size
  steps: int = 300
  batch: int = 64
  learning_rate: float = 3e-3
  margin: float = 0.3     # ArcFace additive angular margin (radians)
  scale: float = 16.0     # ArcFace logit scale
  noise: float = 0.06     # std of the pixel noise augmentation (inputs in [-1, 1])


class IdentityNet(nnx.Module):
  """Per-pixel colour MLP (1x1 convs) -> two stride-2 3x3 convs -> mean and max pooling over
  positions -> linear: (N, size, size, 3) in [-1, 1] -> (N, dim).

  Why this shape: the actors share one palette and differ in which colours go where, so
  per-pixel colour features pooled over the image (a learned colour histogram; max pooling
  keeps a small figure's colours visible on a large background) plus local adjacency (what is
  above what) carry over to unseen actors; a deep net on 32 px memorises the training ones."""

  def __init__(self, cfg: EmbedderConfig, num_classes: int, *, rngs: nnx.Rngs):
    self.cfg, self.num_classes = cfg, num_classes
    w = cfg.width
    self.pixel = nnx.List([nnx.Conv(3, w, (1, 1), rngs=rngs), nnx.Conv(w, w, (1, 1), rngs=rngs)])
    self.convs = nnx.List([nnx.Conv(w, 2 * w, (3, 3), strides=2, rngs=rngs),
                           nnx.Conv(2 * w, 2 * w, (3, 3), strides=2, rngs=rngs)])
    self.head = nnx.Linear(2 * (w + 2 * w), cfg.dim, rngs=rngs)
    # ArcFace class centres; used in training only.
    self.centres = nnx.Param(jax.random.normal(rngs.params(), (num_classes, cfg.dim)))

  def features(self, x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape  # 2x2 mean pooling first: a quarter of the compute, colours intact
    x = x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    for conv in self.pixel:
      x = jax.nn.gelu(conv(x))
    colour = x
    for conv in self.convs:
      x = jax.nn.gelu(conv(x))
    pool = lambda a: jnp.concatenate([a.mean(axis=(1, 2)), a.max(axis=(1, 2))], axis=-1)
    return self.head(jnp.concatenate([pool(colour), pool(x)], axis=-1))

  def __call__(self, x: jax.Array) -> jax.Array:
    return l2_normalise(self.features(x))


def l2_normalise(x, axis: int = -1):
  return x / jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True) + 1e-12)


def arcface_loss(embeddings: jax.Array, centres: jax.Array, labels: jax.Array,
                 margin: float, scale: float) -> jax.Array:
  """Additive angular margin softmax (Deng et al., ArcFace): the target logit is
  s cos(theta + m), the others s cos(theta); embeddings and centres are normalised here.
  Past theta = pi - m, cos(theta + m) would rise again; the usual linear extension keeps the
  target logit monotone in theta there."""
  cos = jnp.clip(l2_normalise(embeddings) @ l2_normalise(centres).T, -1.0 + 1e-6, 1.0 - 1e-6)
  target = jnp.take_along_axis(cos, labels[:, None], axis=1)[:, 0]
  sin = jnp.sqrt(1.0 - jnp.square(target))
  with_margin = target * np.cos(margin) - sin * np.sin(margin)
  with_margin = jnp.where(target > np.cos(np.pi - margin), with_margin,
                          target - np.sin(np.pi - margin) * margin)
  onehot = jax.nn.one_hot(labels, centres.shape[0])
  logits = scale * jnp.where(onehot > 0, with_margin[:, None], cos)
  return optax.softmax_cross_entropy(logits, onehot).mean()


def prepare(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 (N, H, W, 3) -> float32 (N, size, size, 3) in [-1, 1] (bilinear resize if needed)."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images shape {images.shape}: expected (N, H, W, 3)")
  if images.shape[1:3] != (size, size):
    images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR))
                       for im in images.astype(np.uint8)])
  return images.astype(np.float32) / 127.5 - 1.0


def augment(key: jax.Array, x: jax.Array, noise: float) -> jax.Array:
  """Per image: flip, zoom in [0.75, 1.3], shift up to 15% of the side, Gaussian noise."""
  n, h, w, c = x.shape
  k_flip, k_zoom, k_shift, k_noise = jax.random.split(key, 4)
  flip = jax.random.bernoulli(k_flip, 0.5, (n,))
  x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
  zoom = jnp.exp(jax.random.uniform(k_zoom, (n,), minval=np.log(0.75), maxval=np.log(1.3)))
  shift = jax.random.uniform(k_shift, (n, 2), minval=-0.15, maxval=0.15) * h

  def warp(img, z, s):  # zoom about the centre, then shift; outside pixels are 0 (mid grey)
    trans = (1.0 - z) * jnp.array([h, w]) / 2 + s
    return jax.image.scale_and_translate(img, (h, w, c), (0, 1), jnp.array([z, z]), trans,
                                         "linear")

  x = jax.vmap(warp)(x, zoom, shift)
  return x + noise * jax.random.normal(k_noise, x.shape)


def train(images: np.ndarray, labels: np.ndarray, cfg: EmbedderConfig = EmbedderConfig(),
          seed: int = 0, log=None) -> IdentityNet:
  """ArcFace training on uint8 images (N, H, W, 3) with integer identity labels (N,)."""
  labels = np.asarray(labels, np.int32)
  if len(images) != len(labels) or len(images) == 0:
    raise ValueError(f"{len(images)} images and {len(labels)} labels: expected equal, non-zero")
  classes = int(labels.max()) + 1
  if classes < 2:
    raise ValueError("embedder training needs at least 2 identities")
  x_all = jnp.asarray(prepare(images, cfg.size))
  y_all = jnp.asarray(labels)
  net = IdentityNet(cfg, classes, rngs=nnx.Rngs(seed))

  def batch_loss(net, idx, key):
    x = augment(key, x_all[idx], cfg.noise)
    return arcface_loss(net.features(x), net.centres[...], y_all[idx], cfg.margin, cfg.scale)

  return fitting.fit(net, batch_loss, num_examples=len(labels), steps=cfg.steps, batch=cfg.batch,
                     learning_rate=cfg.learning_rate, seed=seed, log=log)


@nnx.jit
def _forward(net: IdentityNet, x: jax.Array):
  f = net.features(x)
  return f, l2_normalise(f)


def embed_and_features(net: IdentityNet, images: np.ndarray, batch: int = 256):
  """(unit-norm embeddings (N, dim), raw features (N, dim)) as float64 numpy."""
  x = prepare(images, net.cfg.size)
  feats, embs = [], []
  for i in range(0, len(x), batch):
    chunk = x[i:i + batch]
    pad = batch - len(chunk) if len(x) > batch else 0  # one compiled shape for long inputs
    f, e = _forward(net, jnp.asarray(np.pad(chunk, ((0, pad), (0, 0), (0, 0), (0, 0)))))
    feats.append(np.asarray(f, np.float64)[:len(chunk)])
    embs.append(np.asarray(e, np.float64)[:len(chunk)])
  dim = net.cfg.dim
  cat = lambda parts: np.concatenate(parts) if parts else np.zeros((0, dim))
  return cat(embs), cat(feats)


def embed(net: IdentityNet, images: np.ndarray) -> np.ndarray:
  return embed_and_features(net, images)[0]


def save(net: IdentityNet, path: str) -> str:
  """One .npz (weights by their nnx path + the config), written atomically."""
  return module_npz.save(net, path, {"config": dataclasses.asdict(net.cfg),
                                     "num_classes": net.num_classes})


def load(path: str) -> IdentityNet:
  meta = module_npz.read_meta(path, "embedder")
  try:
    cfg, classes = EmbedderConfig(**meta["config"]), int(meta["num_classes"])
  except (KeyError, TypeError) as e:
    raise ValueError(f"{path}: not an embedder file written by eval.embedder.save ({e})") from None
  return module_npz.build_and_load(lambda: IdentityNet(cfg, classes, rngs=nnx.Rngs(0)), path,
                                   "embedder")
