"""The random-batch source: Gaussian latents and text embeddings in the batch `schema`.

Used by tiny configs, tests and benchmarks (`config.data.source = "random"`), never as a stand-in
for real data in an experiment. It is a Grain dataset like the records pipeline, so the trainer
checkpoints its iterator state the same way and a resumed run sees the same batches.

Each example is a pure function of (seed, split, index), in the records' layout (bfloat16
latents and text states, zero past the prompt and on reference padding); a task is drawn from
`config.data.task_probs` (t2v: no references; i2v: no references, first latent frame clean;
vc: 1..R_max references; continue: a clean prefix of 1..data.context_frames latent frames, with
references as vc unless data.continue_references is False), so every branch of the training
step is exercised.
"""
from __future__ import annotations

import grain
import numpy as np

from wildactor_jax.input import host_shard
from wildactor_jax.input.schema import (CONTINUE, FLOAT_DTYPE, TASKS, VC, clean_frames_for,
                                        continue_options, example_shapes, task_probabilities)

SPLIT_SALT = {"train": 0, "test": 1}


def make_example(shapes: dict, task_probs: dict, seed: int, split: str, index: int,
                 continuation: tuple[int, bool] = (1, True)) -> dict:
  """One random example (numpy) with the shapes of `schema.example_shapes`; continuation is
  `schema.continue_options`."""
  rng = np.random.default_rng([seed, SPLIT_SALT[split], index])
  task = int(rng.choice(len(TASKS), p=task_probabilities(task_probs)))
  s = shapes["text_mask"][0]
  r_max = shapes["ref_mask"][0]
  text_len = int(rng.integers(1, s + 1))
  with_refs = task == VC or (task == CONTINUE and continuation[1])
  num_refs = int(rng.integers(1, r_max + 1)) if with_refs and r_max else 0
  num_faces = int(rng.integers(0, num_refs + 1))
  text_valid = np.arange(s) < text_len
  ref_valid = np.arange(r_max) < num_refs
  normal = lambda shape: rng.standard_normal(shape, np.float32)
  refs = normal(shapes["ref_latents"]) * ref_valid[:, None, None, None]
  example = {
      "video_latents": normal(shapes["video_latents"]).astype(FLOAT_DTYPE),
      "text_embeds": (normal(shapes["text_embeds"]) * text_valid[:, None]).astype(FLOAT_DTYPE),
      "text_mask": text_valid,
      "ref_latents": refs.astype(FLOAT_DTYPE),
      # Faces first, then bodies; 0 on padding (as the records pipeline).
      "ref_type": (ref_valid & (np.arange(r_max) >= num_faces)).astype(np.int32),
      "ref_mask": ref_valid,
      "clean_frames": np.asarray(clean_frames_for(task, rng, continuation[0],
                                                  shapes["video_latents"][0]), np.int32),
      "task": np.asarray(task, np.int32),
      "ref_yaw": (rng.uniform(-180.0, 180.0, r_max) * ref_valid).astype(np.float32),
      "record_index": np.asarray(index, np.int32),
  }
  # A "person": one random block of tokens in every latent frame (drawn last: the fields above
  # are what they were before the mask existed).
  t, h, w = shapes["person_mask"]
  y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
  mask = np.zeros((t, h, w), bool)
  mask[:, y0:y0 + int(rng.integers(1, h - y0 + 1)), x0:x0 + int(rng.integers(1, w - x0 + 1))] = True
  example["person_mask"] = mask
  return example


def create_dataset(config, split: str = "train", process_index: int = 0, process_count: int = 1):
  """A Grain iterator over per-host batches of random examples (repeats forever): this process's
  rows of the global batches (`host_shard`), the same global batches on any process count."""
  if split not in SPLIT_SALT:
    raise ValueError(f"split {split!r}: expected one of {sorted(SPLIT_SALT)}")
  data = config.data
  shapes = example_shapes(config)
  num_examples = int(data.get("random_examples", 1024))
  seed = int(data.get("seed", 0))
  task_probs = dict(data.get("task_probs", {"vc": 1.0}))
  continuation = continue_options(data)
  stream = grain.MapDataset.range(0, num_examples).repeat(None)
  stream = stream.map(lambda i: make_example(shapes, task_probs, seed, split, int(i), continuation))
  ds = host_shard.process_share(stream, data.global_batch_size, process_index, process_count)
  ds = ds.batch(data.global_batch_size // process_count, drop_remainder=True)
  # A small prefetch: the default buffer (500 batches) would hold gigabytes of 5B-sized latents.
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)))
