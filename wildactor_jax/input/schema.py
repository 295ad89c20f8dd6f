"""The training batch, defined once: task names, keys, dtypes and per-example shapes.

Both sources (`records_source` over encoded records, `random_source` for tiny configs and
benchmarks) yield per-host numpy batches with exactly these keys; `batches.to_global` puts the
DEVICE_KEYS on the mesh and leaves the HOST_KEYS on the host.

Per example (R = config.data.r_max, S = text length, D = text_dim; latents (T, H, W, C) with
T = (frames - 1) / 4 + 1 and H, W = height, width / 16 for Wan2.2, the backbone's VAE geometry):
  video_latents     (T, H, W, C)  float (the records' dtype, bfloat16 by default)
  text_embeds       (S, D)        float; zero past the prompt's tokens, as in Wan
  text_mask         (S,)          bool; True on the prompt's tokens
  ref_latents       (R, H, W, C)  float; one latent frame per reference: faces first, then
                                  bodies, then zero padding
  ref_type          (R,)          int32; 0 face, 1 body (three-view sheets are bodies); 0 on padding
  ref_mask          (R,)          bool; True on the valid (leading) references
  clean_frames      ()            int32; latent frames kept clean at the start of the clip (the
                                  train step sets t = 0 there and leaves them out of the loss):
                                  0 for t2v and vc, 1 for i2v, 1..data.context_frames for
                                  continue (the context a continued segment starts from)
  task              ()            int32; index into TASKS
  person_mask       (T, H, W)     bool; True on the latent tokens the person covers (records
                                  encoded with --person_boxes), all False when unknown: what
                                  train.person_loss_weight weights up
  ref_yaw           (R,)          float32; degrees, 0 on padding               (host only)
  record_index      ()            int32; the example's position in its split   (host only)
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from wildactor_jax import config_lib

TASKS = ("t2v", "i2v", "vc", "continue")
T2V, I2V, VC, CONTINUE = range(len(TASKS))
# Latents and text states arrive in the records' dtype (bfloat16 by default) and go to the
# device as they are: the step upcasts where it needs float32.
FLOAT_DTYPE = np.dtype(ml_dtypes.bfloat16)
FLOAT_KEYS = ("video_latents", "text_embeds", "ref_latents")
# What the train step reads, with the dtype it gets on the device (float keys: FLOAT_DTYPE
# for the random source, the records' dtype for encoded records).
DEVICE_DTYPES = {"video_latents": FLOAT_DTYPE, "text_embeds": FLOAT_DTYPE,
                 "text_mask": np.dtype(bool), "ref_latents": FLOAT_DTYPE,
                 "ref_type": np.dtype(np.int32), "ref_mask": np.dtype(bool),
                 "clean_frames": np.dtype(np.int32), "task": np.dtype(np.int32),
                 "person_mask": np.dtype(bool)}
# Kept on the host for logging, debugging and tests; the step never sees them.
HOST_DTYPES = {"ref_yaw": np.dtype(np.float32), "record_index": np.dtype(np.int32)}
DTYPES = {**DEVICE_DTYPES, **HOST_DTYPES}


def latent_grid(config) -> tuple[int, int, int, int]:
  """(T, H, W, C) of a clip's latents for config.data's frames/height/width."""
  tf, sf, z = config_lib.vae_geometry(config)
  d = config.data
  if (d.frames - 1) % tf or d.height % sf or d.width % sf:
    raise ValueError(f"config.data frames/height/width {d.frames}/{d.height}/{d.width}: expected "
                     f"frames = 1 + {tf} k and height, width multiples of {sf}")
  return (d.frames - 1) // tf + 1, d.height // sf, d.width // sf, z


def text_length(config) -> int:
  """Prompt states per example. Training and sampling pad prompts the same way (Wan's convention):
  states zero past the prompt's tokens, padded to config.text_encoder.max_length, and the DiT's
  cross-attention reads every position (no mask). The records pipeline pads to data.text_len,
  which must therefore equal the text encoder's max_length."""
  encoder = config.get("text_encoder")
  n = int(encoder.max_length) if encoder is not None and encoder.get("max_length") else None
  d = config.data.get("text_len")
  if n is not None and d is not None and int(d) != n:
    raise ValueError(f"config.data.text_len {d} != config.text_encoder.max_length {n}: training "
                     "and sampling must pad prompts to one length")
  return n if n is not None else int(d if d is not None else 512)


def example_shapes(config) -> dict[str, tuple[int, ...]]:
  """Per-example shape of every key in DTYPES, from the config."""
  t, h, w, c = latent_grid(config)
  s = text_length(config)
  r = int(config.data.r_max)
  return {"video_latents": (t, h, w, c), "text_embeds": (s, config.model.text_dim),
          "text_mask": (s,), "ref_latents": (r, h, w, c), "ref_type": (r,), "ref_mask": (r,),
          "clean_frames": (), "task": (), "person_mask": (t, h, w), "ref_yaw": (r,),
          "record_index": ()}


def task_probabilities(task_probs) -> np.ndarray:
  """config.data.task_probs ({"t2v": p, "i2v": p, "vc": p, "continue": p}; a task left out has
  probability 0) as normalised weights over TASKS."""
  probs = dict(task_probs)
  unknown = set(probs) - set(TASKS)
  if unknown:
    raise ValueError(f"config.data.task_probs: unknown tasks {sorted(unknown)}; expected {TASKS}")
  p = np.asarray([float(probs.get(t, 0.0)) for t in TASKS])
  if (p < 0).any() or p.sum() <= 0:
    raise ValueError(f"config.data.task_probs {probs}: expected non-negative, positive sum")
  return p / p.sum()


def continue_options(data_config) -> tuple[int, bool]:
  """(context_frames, continue_references) from config.data: the most clean leading latent
  frames a continue example gets (default 1; each example draws 1..K, capped one below the
  clip's latent frame count) and whether continue examples carry references (drawn as for vc;
  default True: a continued shot of a story keeps its actor's references)."""
  get = data_config.get if hasattr(data_config, "get") else lambda k, d: d
  k = int(get("context_frames", 1))
  if k < 1:
    raise ValueError(f"config.data.context_frames {k}: expected >= 1")
  return k, bool(get("continue_references", True))


def clean_frames_for(task: int, rng, max_context: int, num_frames: int) -> int:
  """The clean-prefix length of an example of `task`: 1 for i2v; for continue uniform in
  1..max_context, below num_frames (at least one latent frame is denoised); else 0."""
  if task == I2V:
    return 1
  if task == CONTINUE:
    return min(int(rng.integers(1, max_context + 1)), num_frames - 1)
  return 0
