"""Grain input pipeline: encoded ArrayRecords -> static-shape training batches (no TensorFlow).

API (what `batches.create_source` calls for config.data.source = "records"):

  it = records_source.create_dataset(config.data, split="train",
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count())
  batch = next(it)                  # dict of numpy arrays, this process's share of the batch
  # checkpoint: ocp.args.Composite(..., data=grain.checkpoint.CheckpointSave(it)); restore with
  # grain.checkpoint.CheckpointRestore(it) into a fresh create_dataset(...) iterator (same
  # process count). records_source.skipped_counts() -> {reason: n} records skipped so far.

`create_dataset` returns a grain DatasetIterator (`iter(it) is it`; get_state/set_state);
`build_dataset` returns the underlying grain IterDataset.

Steps: the split's `<split>-*.array_record` files (from wildactor_jax.encode) as one
random-access source -> shuffle (per epoch) -> repeat -> per record, seeded by (seed,
position): decode, draw the task, choose references -> static shapes; that global stream is
the same in every process, and process p takes its rows of each global batch (`host_shard`:
disjoint, covering, and the same global batches on any process count) -> batches of
global_batch_size / P. A record that fails to decode (or has a latent shape other than
encode_info.json's) is skipped and counted, never a crash (it shifts that process's stream).

Tasks (config.data.task_probs): t2v -> no references; i2v -> no references and clean_frames = 1
(the train step sets t = 0 on the first latent frame); continue -> clean_frames drawn from
1..context_frames (below the clip's latent frame count): the clip's first frames stand for the
end of a previous segment, and the references are drawn as for vc unless continue_references is
False (a continue draw on a record without usable references keeps no references); i2v with
probability cut_context -> the clean first latent frame is one of the record's body references
instead of the clip's own (a still of the person from another shot, then a cut: reading it takes
matching by content, not by position); vc -> face and
body counts drawn uniformly from 0..max_faces and 0..max_bodies (or fixed num_faces/num_bodies
when random_counts is False), capped by what the record holds and by r_max (the larger count
gives way first), at least one reference in all; the references of each type are chosen by
`viewpoint_sampling.sample_views`, faces only among `viewpoint_sampling.usable_faces` (a face
seen from behind or barely visible is never a face reference). A vc draw on a record with no
usable references becomes t2v.

Batches: the keys, dtypes and shapes of `schema`, with a leading per-process batch axis
b = global_batch_size / P; float keys keep the records' dtype.

config.data fields:
  records            folder of encoded shards (and encode_info.json)
  global_batch_size  across all processes (must divide by process_count)
  seed, shuffle      shuffle order and every random draw derive from the seed
  num_epochs         None (default): repeat forever; n: stop after n passes over the shard
  task_probs         {"t2v": p, "i2v": p, "vc": p, "continue": p}, normalised
  context_frames     the most clean latent frames of a continue example (default 1)
  continue_references  continue examples carry references (default True)
  cut_context        share of i2v examples whose clean frame is a body reference (default 0;
                     a toy backbone's pre-training, configs/demo_tiny.py)
  random_counts      True: counts ~ U{0..max_*}; False: num_faces / num_bodies
  num_faces, num_bodies, max_faces, max_bodies, r_max
  sampler            "adaptive" | "uniform": the angular decay on or off; delta (deg), decay
  debias             frontal de-biasing start weights, default True, in either sampler mode;
                     bandwidth (deg, default delta)
  face_max_yaw, min_face_visibility   which faces may be references (viewpoint_sampling)
  text_len           default 512; read_threads (default 2); prefetch (default 4)
"""
from __future__ import annotations

import logging
import threading
from typing import Any

import grain
import numpy as np

from wildactor_jax import fs
from wildactor_jax.input import host_shard, records, viewpoint_sampling
from wildactor_jax.input.schema import (CONTINUE, I2V, T2V, TASKS, VC, clean_frames_for,
                                        continue_options, task_probabilities)

_skip_lock = threading.Lock()
_skipped: dict[str, int] = {}


def skipped_counts() -> dict[str, int]:
  """Records skipped by this process since start, by reason."""
  with _skip_lock:
    return dict(_skipped)


def _skip(reason: str, detail: str) -> None:
  with _skip_lock:
    _skipped[reason] = _skipped.get(reason, 0) + 1
    first = _skipped[reason] <= 5
  if first:  # the first few of each kind are logged; all are counted
    logging.warning("records_source: skipping a record (%s): %s", reason, detail)


def split_files(records_dir: str, split: str) -> list[str]:
  files = fs.glob(fs.join(records_dir, f"{split}-*.array_record"))
  if not files:
    raise FileNotFoundError(f"{records_dir}: no {split}-*.array_record shards (run "
                            f"python -m wildactor_jax.encode first)")
  # ArrayRecord reads local files only: a bucket is read through its gcsfuse mount.
  return [fs.local_path(f, "config.data.records") for f in files]


def expected_latent_shape(records_dir: str) -> tuple[int, ...] | None:
  """(T', H', W', z) from encode_info.json, or None when the folder has none."""
  path = fs.join(records_dir, "encode_info.json")
  if not fs.exists(path):
    return None
  info = fs.read_json(path)
  s, t = info["spatial_factor"], info["temporal_factor"]
  return (1 + (info["frames"] - 1) // t, info["height"] // s, info["width"] // s, info["z_dim"])


def choose_counts(rng: np.random.Generator, n_faces: int, n_bodies: int, opts: dict) -> tuple[int, int]:
  """(faces, bodies) to show for a vc example, per the rules in the module docstring."""
  if opts["random_counts"]:
    nf, nb = int(rng.integers(0, opts["max_faces"] + 1)), int(rng.integers(0, opts["max_bodies"] + 1))
  else:
    nf, nb = opts["num_faces"], opts["num_bodies"]
  nf, nb = min(nf, n_faces), min(nb, n_bodies)
  while nf + nb > opts["r_max"]:
    if nf > nb:
      nf -= 1
    else:
      nb -= 1
  if nf + nb == 0 and n_faces + n_bodies > 0:
    if n_bodies == 0 or (n_faces > 0 and rng.random() < 0.5):
      nf = 1
    else:
      nb = 1
  return nf, nb


class PrepareExample(grain.transforms.RandomMap):
  """Record index -> fixed-shape example dict (or None when the record is skipped)."""

  def __init__(self, source, opts: dict, latent_shape: tuple[int, ...] | None):
    self.source, self.opts, self.latent_shape = source, opts, latent_shape

  def random_map(self, index: int, rng: np.random.Generator) -> dict[str, Any] | None:
    index = int(index)
    try:
      rec = records.deserialize(self.source[index])
    except Exception as e:  # any corrupt record: count and skip
      _skip("undecodable", f"record {index}: {e}")
      return None
    video = rec["video_latents"]
    if self.latent_shape is None:
      self.latent_shape = video.shape
    if video.shape != tuple(self.latent_shape):
      _skip("bad_shape", f"record {index}: video_latents {video.shape}, expected "
            f"{tuple(self.latent_shape)}")
      return None
    return self.build(index, rec, rng)

  def build(self, index: int, rec: dict, rng: np.random.Generator) -> dict[str, Any]:
    o = self.opts
    video = rec["video_latents"]
    task = int(rng.choice(len(TASKS), p=o["task_p"]))
    ref_type = np.asarray(rec["ref_type"], np.int32)
    yaw = np.asarray(rec["ref_yaw"], np.float32)
    chosen = np.zeros((0,), np.int64)
    if task == VC or (task == CONTINUE and o["continue_references"]):
      usable = viewpoint_sampling.usable_faces(
          yaw, rec["ref_view"], rec.get("ref_visibility"), max_yaw=o["face_max_yaw"],
          min_visibility=o["min_face_visibility"])
      faces, bodies = np.flatnonzero((ref_type == 0) & usable), np.flatnonzero(ref_type == 1)
      nf, nb = choose_counts(rng, len(faces), len(bodies), o)
      pick = lambda pool, k: pool[viewpoint_sampling.sample_views(
          yaw[pool], k, rng, mode=o["sampler"], delta=o["delta"], decay=o["decay"],
          debias=o["debias"], bandwidth=o["bandwidth"])]
      chosen = np.concatenate([pick(faces, nf), pick(bodies, nb)])
      if chosen.size == 0 and task == VC:
        task = T2V
    if task == I2V and o["cut_context"] > 0.0 and rng.random() < o["cut_context"]:
      video = cut_to_reference(video, rec["ref_latents"], ref_type, rng)
    r_max, n = o["r_max"], chosen.size
    ref_latents = np.zeros((r_max,) + video.shape[1:], video.dtype)
    ref_latents[:n] = rec["ref_latents"][chosen]
    text_len = o["text_len"]
    emb = rec["text_embeds"][:text_len]
    text = np.zeros((text_len, emb.shape[1]), emb.dtype)
    text[:emb.shape[0]] = emb
    mask = np.zeros((text_len,), bool)
    mask[:emb.shape[0]] = rec["text_mask"][:text_len]
    pad = lambda values, dtype: np.concatenate([values.astype(dtype), np.zeros(r_max - n, dtype)])
    return {"video_latents": np.asarray(video), "text_embeds": text, "text_mask": mask,
            "ref_latents": ref_latents, "ref_type": pad(ref_type[chosen], np.int32),
            "ref_mask": np.arange(r_max) < n, "ref_yaw": pad(yaw[chosen], np.float32),
            "clean_frames": np.int32(clean_frames_for(task, rng, o["context_frames"],
                                                      video.shape[0])),
            "task": np.int32(task),
            "person_mask": (np.asarray(rec["person_mask"], bool) if "person_mask" in rec
                            else np.zeros(video.shape[:3], bool)),
            "record_index": np.int32(index)}


def cut_to_reference(video: np.ndarray, ref_latents: np.ndarray, ref_type: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
  """video with its first latent frame replaced by a randomly drawn body reference (unchanged
  when the record has none). A reference is one latent frame encoded alone, as the causal
  autoencoder encodes a clip's first frame, so the swap is a clip that starts on that still."""
  bodies = np.flatnonzero(ref_type == 1)
  if bodies.size == 0:
    return video
  video = np.array(video)
  video[0] = ref_latents[int(rng.choice(bodies))]
  return video


def _options(cfg) -> dict:
  get = lambda name, default: cfg.get(name, default) if hasattr(cfg, "get") else default
  opts = {
      "task_p": task_probabilities(get("task_probs", {"t2v": 0.1, "i2v": 0.1, "vc": 0.8})),
      "random_counts": bool(get("random_counts", True)), "num_faces": int(get("num_faces", 3)),
      "num_bodies": int(get("num_bodies", 3)), "max_faces": int(get("max_faces", 5)),
      "max_bodies": int(get("max_bodies", 5)), "r_max": int(get("r_max", 10)),
      "sampler": str(get("sampler", "adaptive")), "delta": float(get("delta", 25.0)),
      "decay": float(get("decay", 0.25)), "debias": bool(get("debias", True)),
      "bandwidth": get("bandwidth", None), "text_len": int(get("text_len", 512)),
      "face_max_yaw": float(get("face_max_yaw", viewpoint_sampling.FACE_MAX_YAW)),
      "min_face_visibility": float(get("min_face_visibility",
                                       viewpoint_sampling.MIN_FACE_VISIBILITY))}
  opts["context_frames"], opts["continue_references"] = continue_options(cfg)
  opts["cut_context"] = float(get("cut_context", 0.0))
  if not 0.0 <= opts["cut_context"] <= 1.0:
    raise ValueError(f"config.data.cut_context {opts['cut_context']}: expected a share in [0, 1]")
  if opts["sampler"] not in viewpoint_sampling.MODES:
    raise ValueError(f"config.data.sampler {opts['sampler']!r}: expected one of "
                     f"{viewpoint_sampling.MODES}")
  if opts["r_max"] < 1:
    raise ValueError(f"config.data.r_max {opts['r_max']}: expected >= 1")
  return opts


def build_dataset(cfg, split: str = "train", process_index: int = 0,
                  process_count: int = 1) -> grain.IterDataset:
  """The grain IterDataset of per-process batches (see the module docstring)."""
  if not cfg.get("records"):
    raise ValueError("config.data.records: expected the folder of encoded shards")
  batch, seed = int(cfg.global_batch_size), int(cfg.get("seed", 0))
  if batch % process_count:
    raise ValueError(f"config.data.global_batch_size {batch}: expected a multiple of the "
                     f"process count {process_count}")
  source = grain.sources.ArrayRecordDataSource(split_files(cfg.records, split))
  # One global stream, the same in every process; each reads its rows of each global batch.
  ds = grain.MapDataset.range(len(source))
  if cfg.get("shuffle", True):
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(cfg.get("num_epochs", None))
  map_seed = int(np.random.SeedSequence([seed, 0]).generate_state(1)[0])
  ds = ds.random_map(PrepareExample(source, _options(cfg), expected_latent_shape(cfg.records)),
                     seed=map_seed)
  ds = host_shard.process_share(ds, batch, process_index, process_count)
  read = grain.ReadOptions(num_threads=int(cfg.get("read_threads", 2)),
                           prefetch_buffer_size=int(cfg.get("prefetch", 4)))
  return ds.to_iter_dataset(read).batch(batch // process_count, drop_remainder=True)


def create_dataset(cfg, split: str = "train", process_index: int = 0,
                   process_count: int = 1) -> grain.DatasetIterator:
  """A checkpointable iterator of per-process batches (see the module docstring)."""
  return iter(build_dataset(cfg, split, process_index, process_count))
