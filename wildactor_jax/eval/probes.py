"""Prompt-adherence probes: small networks that read a clip's motion, camera move and per-frame yaw.

The second axis of the benchmark (the WildActor paper judges prompt adherence with a VLM and
ViCLIP; at our scale the prompt says a motion, a camera move and a start view, and these probes
read them back). They are trained on REAL clips of the TRAINING actors only (never on held-out
actors, never on generated clips), with augmentations that make them blind to identity (colour
channels permuted and rescaled: colour is identity here) and robust to generated clips (noise,
blur), and mirrored clips (a mirror keeps motion and camera and negates the yaw).

    probe = train(clips, motions, cameras, yaws)   # uint8 (N, T, H, W, 3), ints, (N, T) degrees
    out = predict(probe, clips)                    # {"motion": (N,), "camera": (N,), "yaw": (N, T)}

ClipProbe: a per-frame conv encoder (shared; its input is the frame and its difference from the
previous frame, so motion is explicit) -> per-frame features, mixed along time by two 1D
convolutions (a frame's view is easier to read with its neighbours: the way a figure walks or
turns) -> per-frame yaw head (cos, sin); and a 3D conv over the frame feature maps (time x
space) -> motion and camera heads.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from wildactor_jax.eval import fitting
from wildactor_jax.models import module_npz

MOTIONS = ("walk", "wave", "turn", "jump")
CAMERAS = ("orbit", "pan", "zoom")


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  size: int = 64          # frames resized to size x size
  frames: int = 9         # clips resampled to this many frames (nearest in normalised time)
  width: int = 32
  steps: int = 2000
  batch: int = 16
  learning_rate: float = 2e-3
  noise: float = 0.08


class ClipProbe(nnx.Module):

  def __init__(self, cfg: ProbeConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    w = cfg.width
    conv = lambda i, o, s=1: nnx.Conv(i, o, (3, 3), strides=s, rngs=rngs)
    self.frame = nnx.List([conv(6, w // 2, 2), conv(w // 2, w, 2), conv(w, 2 * w, 2)])  # size / 8
    self.view_time = nnx.List([nnx.Conv(4 * w, 4 * w, (3,), rngs=rngs) for _ in range(2)])
    self.view = nnx.Linear(4 * w, 2, rngs=rngs)
    conv3 = lambda i, o, s: nnx.Conv(i, o, (3, 3, 3), strides=s, rngs=rngs)
    self.clip = nnx.List([conv3(2 * w, 2 * w, (1, 1, 1)), conv3(2 * w, 2 * w, (2, 2, 2))])
    self.motion = nnx.Linear(4 * w, len(MOTIONS), rngs=rngs)
    self.camera = nnx.Linear(4 * w, len(CAMERAS), rngs=rngs)

  def __call__(self, x: jax.Array):
    """x (N, T, S, S, 3) in [-1, 1] -> motion logits (N, 4), camera logits (N, 3), per-frame
    (cos, sin) of the yaw (N, T, 2)."""
    n, t = x.shape[:2]
    diff = jnp.concatenate([jnp.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], axis=1)
    f = jnp.concatenate([x, diff], axis=-1).reshape(n * t, *x.shape[2:4], 6)
    for conv in self.frame:
      f = jax.nn.gelu(conv(f))
    pool = lambda a, axes: jnp.concatenate([a.mean(axis=axes), a.max(axis=axes)], axis=-1)
    v = pool(f, (1, 2)).reshape(n, t, -1)
    for conv in self.view_time:
      v = v + jax.nn.gelu(conv(v))
    view = self.view(v)
    c = f.reshape(n, t, *f.shape[1:])
    for conv in self.clip:
      c = jax.nn.gelu(conv(c))
    c = pool(c, (1, 2, 3))
    return self.motion(c), self.camera(c), view


def prepare(clips, cfg: ProbeConfig) -> np.ndarray:
  """uint8 clips (N, T, H, W, 3) (a list of different lengths is fine) -> float32
  (N, cfg.frames, size, size, 3) in [-1, 1]: frames resampled by nearest normalised time."""
  out = []
  for clip in clips:
    clip = np.asarray(clip)
    idx = np.round(np.linspace(0, len(clip) - 1, cfg.frames)).astype(int)
    frames = clip[idx]
    if frames.shape[1:3] != (cfg.size, cfg.size):
      frames = np.stack([np.asarray(Image.fromarray(f).resize((cfg.size, cfg.size),
                                                              Image.BILINEAR)) for f in frames])
    out.append(frames)
  return np.stack(out).astype(np.float32) / 127.5 - 1.0


def resample_yaws(yaws, frames: int) -> np.ndarray:
  y = np.asarray(yaws, np.float64)
  return y[np.round(np.linspace(0, len(y) - 1, frames)).astype(int)]


def augment(key: jax.Array, x: jax.Array, yaw: jax.Array, noise: float):
  """Colour blindness (channels permuted and rescaled per clip), mirroring (yaw negated), a
  random 2x blur and pixel noise. x (N, T, S, S, 3); yaw (N, T) radians."""
  n = x.shape[0]
  k_perm, k_gain, k_flip, k_blur, k_noise = jax.random.split(key, 5)
  perm = jax.vmap(lambda k: jax.random.permutation(k, 3))(jax.random.split(k_perm, n))
  x = jnp.take_along_axis(x, perm[:, None, None, None, :], axis=-1)
  gain = jax.random.uniform(k_gain, (n, 1, 1, 1, 3), minval=0.6, maxval=1.2)
  x = (x + 1.0) * gain - 1.0
  flip = jax.random.bernoulli(k_flip, 0.5, (n,))
  x = jnp.where(flip[:, None, None, None, None], x[:, :, :, ::-1], x)
  yaw = jnp.where(flip[:, None], -yaw, yaw)
  s = x.shape[2]
  blurred = jax.image.resize(jax.image.resize(x, (*x.shape[:2], s // 2, s // 2, 3), "linear"),
                             x.shape, "linear")
  x = jnp.where(jax.random.bernoulli(k_blur, 0.5, (n,))[:, None, None, None, None], blurred, x)
  return x + noise * jax.random.normal(k_noise, x.shape), yaw


def probe_loss(net: ClipProbe, x, motion, camera, yaw):
  """Cross-entropy of motion and camera plus the squared error of the yaw's (cos, sin)."""
  import optax
  m, c, v = net(x)
  target = jnp.stack([jnp.cos(yaw), jnp.sin(yaw)], axis=-1)
  return (optax.softmax_cross_entropy_with_integer_labels(m, motion).mean()
          + optax.softmax_cross_entropy_with_integer_labels(c, camera).mean()
          + jnp.mean(jnp.sum(jnp.square(v - target), axis=-1)))


def train(clips, motions, cameras, yaws, cfg: ProbeConfig = ProbeConfig(), seed: int = 0,
          log=None) -> ClipProbe:
  """clips: uint8 (N, T, H, W, 3) real clips of training actors; motions/cameras: names (N,);
  yaws: per-frame degrees (N, T)."""
  if not len(clips) or not len(clips) == len(motions) == len(cameras) == len(yaws):
    raise ValueError(f"probe training: {len(clips)} clips, {len(motions)} motions, "
                     f"{len(cameras)} cameras, {len(yaws)} yaw rows; expected equal, non-zero")
  x_all = jnp.asarray(prepare(clips, cfg))
  m_all = jnp.asarray([MOTIONS.index(m) for m in motions], jnp.int32)
  c_all = jnp.asarray([CAMERAS.index(c) for c in cameras], jnp.int32)
  y_all = jnp.asarray(np.radians(np.stack([resample_yaws(y, cfg.frames) for y in yaws])),
                      jnp.float32)
  net = ClipProbe(cfg, rngs=nnx.Rngs(seed))

  def batch_loss(net, idx, key):
    x, y = augment(key, x_all[idx], y_all[idx], cfg.noise)
    return probe_loss(net, x, m_all[idx], c_all[idx], y)

  return fitting.fit(net, batch_loss, num_examples=len(clips), steps=cfg.steps, batch=cfg.batch,
                     learning_rate=cfg.learning_rate, seed=seed, log=log)


@nnx.jit
def _forward(net: ClipProbe, x):
  return net(x)


def predict(net: ClipProbe, clips, batch: int = 16) -> dict:
  """-> {"motion": names (N,), "camera": names (N,), "yaw": degrees (N, cfg.frames)}."""
  x = prepare(clips, net.cfg)
  # Chunks of `size` (the last one padded): the scorer asks for one clip at a time, and padding
  # each to 16 made the probes a sixth of a benchmark's scoring time.
  size = max(1, min(batch, len(x)))
  ms, cs, vs = [], [], []
  for lo in range(0, len(x), size):
    chunk = x[lo:lo + size]
    pad = size - len(chunk)
    m, c, v = _forward(net, jnp.asarray(np.pad(chunk, ((0, pad),) + ((0, 0),) * 4)))
    ms.append(np.asarray(m)[:len(chunk)])
    cs.append(np.asarray(c)[:len(chunk)])
    vs.append(np.asarray(v, np.float64)[:len(chunk)])
  m, c, v = np.concatenate(ms), np.concatenate(cs), np.concatenate(vs)
  return {"motion": [MOTIONS[i] for i in m.argmax(-1)],
          "camera": [CAMERAS[i] for i in c.argmax(-1)],
          "yaw": np.degrees(np.arctan2(v[..., 1], v[..., 0]))}


def save(net: ClipProbe, path: str) -> str:
  return module_npz.save(net, path, {"kind": "clip_probe", "config": dataclasses.asdict(net.cfg)})


def load(path: str) -> ClipProbe:
  meta = module_npz.read_meta(path, "probe")
  if meta.get("kind") != "clip_probe":
    raise ValueError(f"{path}: not a clip probe (kind {meta.get('kind')!r})")
  cfg = ProbeConfig(**meta["config"])
  return module_npz.build_and_load(lambda: ClipProbe(cfg, rngs=nnx.Rngs(0)), path, "probe")
