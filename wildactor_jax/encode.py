"""Encode job: raw Actor-18M records (TFDS ArrayRecord) -> training records (`records.py`).

  python -m wildactor_jax.encode --config configs/X.py[:arg] --records DIR --out DIR \
      [--splits train,test] [--batch_size N] [--dtype bfloat16] [--person_boxes FILE]

--records is the TFDS data_dir given to data/build_actor18m.py (or its actor18m/<version> folder).
For every input shard `actor18m-<split>.array_record-i-of-n` it writes `<split>-i-of-n.array_record`
in --out, one encoded record per clip:
  * the clip: decoded with imageio-ffmpeg, the FIRST `config.data.frames` frames (a clip with
    fewer is skipped and counted), each resized to cover (height, width) keeping the aspect
    ratio and centre-cropped (pillow, bicubic), scaled to [-1, 1], VAE-encoded;
  * every reference: resized to fit inside (height, width) keeping the aspect ratio, padded with
    white (nothing of a face is cropped away), encoded as ONE latent frame at the video's
    resolution; with its type (face 0, body 1; three-view sheets are body), yaw and view;
  * the prompt's UMT5 embeddings, trimmed to the real tokens (Wan zero-pads past them);
  * with --person_boxes (JSON lines of per-frame body boxes by video path, `input/person_mask`;
    the synthetic renderer's annotations.jsonl is one), the person's latent tokens as
    `person_mask`, which train.person_loss_weight weights up. A clip without a row is written
    without a mask (weighted as background) and counted as `unboxed`.

Config fields read: config.data.{height, width, frames}; config.vae.kind ("wan": converted Wan
VAE at config.vae.path; "pixel": the parameter-free models.pixel_autoencoder with
config.vae.spatial_factor, default 4); config.text_encoder.{path, tokenizer_path, max_length}.

--records and --out may be gs:// URIs: an input shard in a bucket is copied to a local temporary
file while it is read (ArrayRecord opens local files only), and output shards are written
locally and then copied into the bucket.

Scale-out: JAX process p of P takes input shards p, p + P, ...; within a process each encoder
call is sharded over the local devices (batch padded to a multiple of their count). Resumable:
an output shard is written to a temp name and renamed when complete, and shards whose output
exists are skipped. `encode_info.json` records the geometry; a rerun with another geometry into
the same --out is refused. Prints one JSON summary line per process.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import warnings

import numpy as np

from wildactor_jax import fs, media
from wildactor_jax.infer.encoders import text_encoder_from_config, vae_from_config
from wildactor_jax.input import person_mask, records

RAW_NAME = "actor18m"


def find_raw_dataset(path: str) -> str:
  """The TFDS version folder under `path` (itself, or actor18m/<latest version>); local or gs://."""
  if fs.isfile(fs.join(path, "dataset_info.json")):
    return path
  base = fs.join(path, RAW_NAME)
  versions = sorted((d for d in fs.listdir(base) if fs.isfile(fs.join(base, d, "dataset_info.json"))),
                    key=lambda v: tuple(map(int, v.split("."))))
  if not versions:
    raise FileNotFoundError(f"--records {path}: no built {RAW_NAME} dataset (expected "
                            f"dataset_info.json here or in {RAW_NAME}/<version>/)")
  return fs.join(base, versions[-1])


def decode_clip(data: bytes, frames: int, height: int, width: int) -> np.ndarray | None:
  """(frames, height, width, 3) float32 in [-1, 1] from mp4 bytes; None if the clip is short."""
  import imageio_ffmpeg
  from PIL import Image, ImageOps
  with tempfile.NamedTemporaryFile(suffix=".mp4") as f:  # ffmpeg wants a seekable file
    f.write(data)
    f.flush()
    reader = imageio_ffmpeg.read_frames(f.name)
    try:
      with warnings.catch_warnings():
        # ffmpeg starts by fork+exec; JAX warns about any fork, but nothing runs in the child
        # before exec, so the warning is noise here.
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
        meta = next(reader)
      w, h = meta["size"]
      out = []
      for raw in reader:
        img = Image.frombuffer("RGB", (w, h), raw, "raw", "RGB", 0, 1)
        out.append(np.asarray(ImageOps.fit(img, (width, height), Image.BICUBIC)))
        if len(out) == frames:
          break
    finally:
      reader.close()
  if len(out) < frames:
    return None
  return np.stack(out).astype(np.float32) / 127.5 - 1.0


class ShardedCall:
  """Runs `fn` over a leading batch axis in fixed-size chunks split across the local devices
  (fixed size: one compilation; the last chunk is padded and the padding dropped)."""

  def __init__(self, fn, batch_size: int):
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    devices = jax.local_devices()
    self.chunk = max(1, math.ceil(batch_size / len(devices))) * len(devices)
    self.sharding = NamedSharding(Mesh(np.array(devices), ("batch",)), PartitionSpec("batch"))
    self.replicated = NamedSharding(self.sharding.mesh, PartitionSpec())
    self.fn = fn

  def __call__(self, x: np.ndarray) -> np.ndarray:
    import jax
    outs = []
    for lo in range(0, x.shape[0], self.chunk):
      part = x[lo:lo + self.chunk]
      pad = self.chunk - part.shape[0]
      if pad:
        part = np.concatenate([part, np.zeros((pad,) + part.shape[1:], part.dtype)])
      out = np.asarray(jax.device_get(self.fn(jax.device_put(part, self.sharding))))
      outs.append(out[:self.chunk - pad])
    return np.concatenate(outs)


def load_models(config, batch_size: int):
  """(video encoder: (N, T, H, W, 3) -> latents, text encoder, info dict) from the config."""
  call = ShardedCall(None, batch_size)
  vae = vae_from_config(config, sharding=call.replicated if config.vae.kind == "wan" else None)
  call.fn = vae.encode
  text = text_encoder_from_config(config)
  info = {"vae": config.vae.kind, "z_dim": int(vae.z_dim),
          **({"latents_mean": vae.latents_mean, "latents_std": vae.latents_std}
             if config.vae.kind == "pixel" else {}),
          # A learned autoencoder is identified by its weights: records of another never mix in.
          **({"vae_sha256": fs.sha256(config.vae.path)} if config.vae.kind == "learned" else {}),
          "spatial_factor": int(vae.spatial_factor), "temporal_factor": int(vae.temporal_factor)}
  return call, text, info


NULL_TEXT = "null_text.npz"


def write_null_text(text_encoder, out: str) -> str:
  """The empty prompt's states beside the records: what prompt dropout puts in training batches,
  so that the sampler's unconditional branch (the encoded "") is a condition the model was
  trained on."""
  import io
  embeds, mask = text_encoder.encode([""])
  n = max(int(mask[0].sum()), 1)
  buf = io.BytesIO()
  np.savez(buf, text_embeds=np.asarray(embeds[0, :n], np.float32))
  return fs.atomic_write_bytes(fs.join(out, NULL_TEXT), buf.getvalue())


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_person_boxes(path: str, frames: int) -> dict:
  """person_mask.read_boxes, checked before anything is written: every row covers the frames
  that are encoded."""
  if not fs.exists(path):
    raise FileNotFoundError(f"--person_boxes {path}: no such file (expected JSON lines of "
                            "per-frame body boxes, input/person_mask.py)")
  boxes = person_mask.read_boxes(path)
  for video, clip_boxes in boxes.items():
    if len(clip_boxes) < frames:
      raise ValueError(f"{path}: {video}: {len(clip_boxes)} body boxes, expected one for each "
                       f"of the {frames} frames encoded (config.data.frames)")
  return boxes


class PersonMasks:
  """Each clip's `person_mask` record field from its boxes (`read_person_boxes`), grouped by the
  loaded VAE's own temporal factor; clips without a row get none and are counted (`unboxed`)."""

  def __init__(self, boxes: dict, frames: int, temporal_factor: int):
    self.boxes, self.frames, self.temporal_factor = boxes, frames, temporal_factor
    self.unboxed = 0

  def fields(self, video: str, grid: tuple[int, int]) -> dict:
    if video not in self.boxes:
      self.unboxed += 1
      return {}
    return {"person_mask": person_mask.latent_mask(self.boxes[video][:self.frames],
                                                   self.temporal_factor, *grid)}


def encode_batch(raws: list[dict], geometry: dict, video_call, text_encoder, dtype,
                 skipped: dict, person: PersonMasks | None = None) -> list[bytes]:
  """Encoded record bytes for the raw examples that decode; failures are counted in `skipped`.
  person: the clips' person masks (--person_boxes), or None."""
  frames, height, width = geometry["frames"], geometry["height"], geometry["width"]
  keep, clips, refs = [], [], []
  for raw in raws:
    try:
      clip = decode_clip(raw["video"], frames, height, width)
      images = [media.fit_image(b, height, width) for b in raw["refs"]["image"]]
    except Exception:  # corrupt media: count it, never stop the job
      skipped["undecodable"] = skipped.get("undecodable", 0) + 1
      continue
    if clip is None:
      skipped["too_few_frames"] = skipped.get("too_few_frames", 0) + 1
      continue
    if not images:  # the raw builder guarantees one; a hand-made record may not
      skipped["no_references"] = skipped.get("no_references", 0) + 1
      continue
    keep.append(raw)
    clips.append(clip)
    refs.append(np.stack(images))
  if not keep:
    return []
  video_latents = video_call(np.stack(clips)).astype(dtype)
  counts = [r.shape[0] for r in refs]
  ref_latents = video_call(np.concatenate(refs)[:, None])[:, 0].astype(dtype)
  embeds, mask = text_encoder.encode([_text(r["prompt"]) for r in keep])
  embeds, mask = np.asarray(embeds), np.asarray(mask).astype(bool)
  out, start = [], 0
  for i, raw in enumerate(keep):
    n_text = int(mask[i].sum())
    regions = [_text(x) for x in raw["refs"]["region"]]
    views = [_text(x) for x in raw["refs"]["view"]]
    out.append(records.serialize({
        "video_latents": video_latents[i], "text_embeds": embeds[i, :n_text].astype(dtype),
        "text_mask": mask[i, :n_text], "ref_latents": ref_latents[start:start + counts[i]],
        "ref_type": np.asarray([records.REF_TYPES[r] for r in regions], np.int8),
        "ref_yaw": np.asarray(raw["refs"]["angle"], np.float32).reshape(-1),
        "ref_view": np.asarray([records.VIEWS.index(v) for v in views], np.int8),
        "actor_id": _text(raw["actor_id"]), "prompt": _text(raw["prompt"]),
        "key": _text(raw["key"]),
        **(person.fields(_text(raw.get("video_path", "")), video_latents.shape[2:4])
           if person is not None else {})}))
    start += counts[i]
  return out


def output_name(input_name: str) -> str:
  """actor18m-train.array_record-00001-of-00004 -> train-00001-of-00004.array_record"""
  stem, _, shard = input_name.partition(".array_record-")
  return f"{stem.split('-', 1)[1]}-{shard}.array_record"


def _check_info(out: str, info: dict, is_writer: bool) -> None:
  path = fs.join(out, "encode_info.json")
  if fs.exists(path):
    old = fs.read_json(path)
    if old != info:
      raise ValueError(f"{path}: encoded with {old}, this run is {info}; use another --out")
  elif is_writer:
    fs.atomic_write_json(path, info, indent=1, sort_keys=True)


def run(config, records_dir: str, out: str, splits: list[str] | None = None,
        batch_size: int = 0, dtype: str = "bfloat16", process_index: int | None = None,
        process_count: int | None = None, progress: bool = True,
        person_boxes: str | None = None) -> dict:
  """Encodes this process's shards; returns {"written", "skipped", "shards_done", "shards_reused"}
  (and "unboxed" with person_boxes)."""
  import jax
  import ml_dtypes
  import tensorflow_datasets as tfds
  from array_record.python import array_record_module
  from tqdm import tqdm
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
  geometry = {k: int(config.data[k]) for k in ("frames", "height", "width")}
  if (geometry["frames"] - 1) % 4:
    raise ValueError(f"config.data.frames {geometry['frames']}: expected 1 + 4k")
  builder = tfds.builder_from_directory(find_raw_dataset(records_dir))
  features = builder.info.features
  splits = splits or sorted(builder.info.splits)
  lengths = {}  # input shard -> its number of records (from the dataset info: nothing opened)
  for split in splits:
    if split not in builder.info.splits:
      raise ValueError(f"--splits {split}: not in the raw dataset ({sorted(builder.info.splits)})")
    info = builder.info.splits[split]
    lengths.update(zip((os.fspath(p) for p in info.filepaths), info.shard_lengths))
  mine = sorted(lengths)[process_index::process_count]
  boxes = read_person_boxes(person_boxes, geometry["frames"]) if person_boxes else None
  batch_size = batch_size or jax.local_device_count()
  video_call, text_encoder, model_info = load_models(config, batch_size)
  person = (None if boxes is None else
            PersonMasks(boxes, geometry["frames"], model_info["temporal_factor"]))
  fs.makedirs(out)
  # Masked and unmasked records never share a folder: the flag is part of what was encoded.
  _check_info(out, dict(geometry, dtype=dtype, **model_info,
                        **({"person_boxes": True} if boxes is not None else {})),
              process_index == 0)
  if process_index == 0:
    write_null_text(text_encoder, out)
  finals = {p: fs.join(out, output_name(fs.path(p).name)) for p in mine}
  todo = [p for p in mine if not fs.exists(finals[p])]
  bar = tqdm(total=sum(lengths[p] for p in todo), unit="clip", desc=f"encode p{process_index}",
             disable=not progress)
  written, skipped = 0, {}

  def encode_shard(reader, tmp: str) -> None:
    nonlocal written
    writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
    n = reader.num_records()
    for lo in range(0, n, batch_size):
      raws = []
      for data in reader.read(list(range(lo, min(n, lo + batch_size)))):
        try:
          raws.append(features.deserialize_example_np(data))
        except Exception:  # a corrupt raw record: count it, keep going
          skipped["undecodable"] = skipped.get("undecodable", 0) + 1
      for record in encode_batch(raws, geometry, video_call, text_encoder, np_dtype, skipped,
                                 person):
        writer.write(record)
        written += 1
      bar.update(min(n, lo + batch_size) - lo)
    writer.close()

  # ArrayRecord reads and writes local files: a shard in a bucket is read from a local copy (one
  # at a time), and each output shard is written locally, then moved to --out (a bucket or a
  # folder) under its final name only when complete.
  for path in todo:
    with fs.local_copy(path, "--records shard") as local:
      reader = array_record_module.ArrayRecordReader(local)
      try:
        fs.atomic_write(finals[path], lambda tmp: encode_shard(reader, tmp))
      finally:
        reader.close()
  bar.close()
  return {"written": written, "skipped": skipped, "shards_done": len(todo),
          "shards_reused": len(mine) - len(todo),
          **({"unboxed": person.unboxed} if person is not None else {})}


def main(argv) -> None:
  from absl import flags
  del argv
  FLAGS = flags.FLAGS
  try:
    summary = run(FLAGS.config, FLAGS.records, FLAGS.out,
                  FLAGS.splits.split(",") if FLAGS.splits else None, FLAGS.batch_size,
                  FLAGS.dtype, person_boxes=FLAGS.person_boxes or None)
  except (FileNotFoundError, ValueError, fs.FsError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py[:arg])",
                                  lock_config=False)
  flags.DEFINE_string("records", None, "raw TFDS data_dir from data/build_actor18m.py")
  flags.DEFINE_string("out", None, "folder for the encoded ArrayRecord shards")
  flags.DEFINE_string("splits", "", "comma-separated splits (default: all)")
  flags.DEFINE_integer("batch_size", 0, "clips per encoder call per process (0: local devices)")
  flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float16", "float32"], "stored dtype")
  flags.DEFINE_string("person_boxes", "", "JSON lines of per-frame body boxes by video path "
                      "(wildactor_jax/input/person_mask.py): records get person_mask")
  flags.mark_flags_as_required(["config", "records", "out"])
  from wildactor_jax import cli
  cli.run_absl(main)
