"""Data-side throughput on CPU: synthetic clip generation, raw build, encode, Grain pipeline.

    JAX_PLATFORMS=cpu python -m benchmarks.bench_data [--record benchmarks/results/data_cpu.jsonl]

Prints one JSON line per measurement:
  generator     clips/s of data/synthetic_actors.py (200 clips, 128 px, 17 frames, 2 workers)
  build         rows/s of data/build_actor18m.py on those clips (validation decodes every file)
  encode        clips/s of python -m wildactor_jax.encode with the pixel autoencoder and a tiny
                random UMT5 (the CPU demo's models; 64x64, 9 frames)
  pipeline      examples/s of input/records_source on those encoded records (batch 8, 6 refs)
  pipeline_5b   examples/s on records with the paper geometry's latent shapes (480x832, 93 frames
                -> (24, 30, 52, 48) bf16, 20 references, 512 x 4096 text), written directly with
                records.serialize from random values: measures reading/assembly, not encoding
Run from the repository root (the offline tools are the `data` package). Work happens in a
temporary folder that is removed afterwards.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import sys
import tempfile
import time

import numpy as np


def pipeline_rate(records_dir: str, batch: int, r_max: int, text_len: int, batches: int) -> float:
  import ml_collections
  from wildactor_jax.input import records_source
  cfg = ml_collections.ConfigDict(dict(records=records_dir, global_batch_size=batch, r_max=r_max,
                                       text_len=text_len, seed=0, read_threads=2, prefetch=4))
  it = records_source.create_dataset(cfg)
  next(it)  # start-up (threads, first reads) is not throughput
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batch * batches / (time.perf_counter() - t0)


def write_paper_geometry_records(folder: str, n: int) -> None:
  import ml_dtypes
  from array_record.python import array_record_module
  from wildactor_jax.input import records
  rng = np.random.default_rng(0)
  bf16 = ml_dtypes.bfloat16
  os.makedirs(folder)
  writer = array_record_module.ArrayRecordWriter(
      os.path.join(folder, "train-00000-of-00001.array_record"), "group_size:1")
  video = rng.standard_normal((24, 30, 52, 48)).astype(bf16)
  refs = rng.standard_normal((20, 30, 52, 48)).astype(bf16)
  for i in range(n):
    writer.write(records.serialize({
        "video_latents": video, "text_embeds": rng.standard_normal((120, 4096)).astype(bf16),
        "text_mask": np.ones(120, bool), "ref_latents": refs,
        "ref_type": np.repeat(np.int8([0, 1]), 10), "ref_yaw": rng.uniform(-180, 180, 20).astype(
            np.float32), "ref_view": np.zeros(20, np.int8), "actor_id": f"a{i % 7}",
        "prompt": "a person", "key": str(i)}))
  writer.close()


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--record", default="", help="append the JSON lines to this file")
  p.add_argument("--actors", type=int, default=20)
  p.add_argument("--clips-per-actor", type=int, default=10)
  args = p.parse_args(argv)
  import ml_collections
  from data import build_actor18m, synthetic_actors
  from wildactor_jax import encode
  from wildactor_jax.models import tokenizer as tk, umt5

  results = []
  def emit(**fields):
    line = dict(bench="data_" + fields.pop("name"), **fields)
    print(json.dumps(line), flush=True)
    results.append(line)

  work = tempfile.mkdtemp(prefix="bench_data_")
  try:
    clips = args.actors * args.clips_per_actor
    t0 = time.perf_counter()
    synthetic_actors.generate(os.path.join(work, "media"), args.actors, args.clips_per_actor,
                              seed=0, size=128, frames=17, workers=2)
    dt = time.perf_counter() - t0
    emit(name="generator", clips=clips, seconds=round(dt, 2), clips_per_s=round(clips / dt, 2),
         size=128, frames=17, workers=2)

    t0 = time.perf_counter()
    summary = build_actor18m.build(os.path.join(work, "media", "manifest.jsonl"),
                                   os.path.join(work, "raw"), num_shards=4)
    dt = time.perf_counter() - t0
    emit(name="build", rows=summary["written"], seconds=round(dt, 2),
         rows_per_s=round(summary["written"] / dt, 2))

    prompts = [json.loads(l)["prompt"] for l in open(os.path.join(work, "media", "manifest.jsonl"))]
    words = sorted({w for s in prompts for w in re.findall(r"\w+", s.lower())})
    tok = tk.build_demo_tokenizer(words, os.path.join(work, "tok", "tokenizer.json"))
    umt5.save_random(os.path.join(work, "umt5"), umt5.UMT5Config(
        vocab_size=len(words) + 3, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2),
        tokenizer_path=tok)
    cfg = ml_collections.ConfigDict(dict(
        data=dict(frames=9, height=64, width=64), vae=dict(kind="pixel", spatial_factor=4),
        text_encoder=dict(path=os.path.join(work, "umt5"), tokenizer_path="", max_length=512)))
    t0 = time.perf_counter()
    enc = encode.run(cfg, os.path.join(work, "raw"), os.path.join(work, "enc"), batch_size=8,
                     progress=False)
    dt = time.perf_counter() - t0
    emit(name="encode", clips=enc["written"], seconds=round(dt, 2),
         clips_per_s=round(enc["written"] / dt, 2), height=64, width=64, frames=9, vae="pixel",
         text_encoder="random UMT5 d32 x2 layers")

    rate = pipeline_rate(os.path.join(work, "enc"), batch=8, r_max=6, text_len=512, batches=60)
    emit(name="pipeline", examples_per_s=round(rate, 1), batch=8, r_max=6,
         latent_shape=[3, 16, 16, 48], note="demo geometry, encoded by the encode job")

    write_paper_geometry_records(os.path.join(work, "enc5b"), 48)
    rate = pipeline_rate(os.path.join(work, "enc5b"), batch=4, r_max=6, text_len=512, batches=15)
    emit(name="pipeline_5b", examples_per_s=round(rate, 1), batch=4, r_max=6,
         latent_shape=[24, 30, 52, 48], refs_per_record=20,
         note="paper geometry, random latents written with records.serialize")
  finally:
    shutil.rmtree(work, ignore_errors=True)

  if args.record:
    import jax
    stamp = {"command": "JAX_PLATFORMS=cpu python -m benchmarks.bench_data",
             "date": datetime.date.today().isoformat(), "jax": jax.__version__,
             "device": f"cpu ({os.cpu_count()} cores, shared)"}
    with open(args.record, "a") as f:
      for line in results:
        f.write(json.dumps(dict(line, **stamp)) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
