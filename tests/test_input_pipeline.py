"""Encoded record format and the Grain pipeline: determinism, Orbax resume, sharding, skips."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import grain
import jax
import ml_collections
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest
from array_record.python import array_record_module

from wildactor_jax.input import batches, records_source as ip, schema
from wildactor_jax.input import records

LATENT = (3, 4, 4, 8)  # (T', H', W', z)
N_RECORDS = 23


def make_example(i: int, rng: np.random.Generator, dtype=np.float32) -> dict:
  """Record i: video latents filled with i, reference j filled with 1000 i + j (float32 keeps
  those exact), so a batch says which record and which references it holds."""
  n_refs = int(rng.integers(1, 9))
  n_text = int(rng.integers(3, 12))
  ref_type = rng.integers(0, 2, n_refs).astype(np.int8)
  return {
      "video_latents": np.full(LATENT, i, dtype),
      "text_embeds": rng.standard_normal((n_text, 6)).astype(dtype),
      "text_mask": np.ones((n_text,), bool),
      "ref_latents": ((1000.0 * i + np.arange(n_refs))[:, None, None, None]
                      * np.ones((1,) + LATENT[1:])).astype(dtype),
      "ref_type": ref_type, "ref_yaw": rng.uniform(-180, 180, n_refs).astype(np.float32),
      "ref_view": np.zeros((n_refs,), np.int8), "actor_id": f"a{i % 5}", "prompt": f"clip {i}",
      "key": f"k{i}"}


def make_examples(n: int) -> list[dict]:
  """Records 0..n-1 as write_shards writes them (one seeded stream)."""
  rng = np.random.default_rng(0)
  return [make_example(i, rng) for i in range(n)]


def write_shards(folder: pathlib.Path, n: int, shards: int = 3, corrupt: tuple[int, ...] = ()):
  examples = make_examples(n)
  folder.mkdir(parents=True, exist_ok=True)
  per_shard = -(-n // shards)
  for s in range(shards):  # contiguous ranges: record i sits at position i of the split
    writer = array_record_module.ArrayRecordWriter(
        str(folder / f"train-{s:05d}-of-{shards:05d}.array_record"), "group_size:1")
    for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
      writer.write(b"garbage, not a record" if i in corrupt else records.serialize(examples[i]))
    writer.close()
  (folder / "encode_info.json").write_text(json.dumps(
      {"frames": 9, "height": 16, "width": 16, "z_dim": 8, "spatial_factor": 4,
       "temporal_factor": 4, "dtype": "bfloat16", "vae": "pixel"}))


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> pathlib.Path:
  folder = tmp_path_factory.mktemp("encoded")
  write_shards(folder, N_RECORDS)
  return folder


def config(folder, **overrides) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(dict(
      records=str(folder), global_batch_size=4, seed=0, shuffle=True, num_epochs=None,
      task_probs=dict(t2v=0.1, i2v=0.1, vc=0.8), random_counts=True, num_faces=3, num_bodies=3,
      max_faces=5, max_bodies=5, r_max=6, sampler="adaptive", delta=25.0, decay=0.25,
      text_len=16, read_threads=2, prefetch=2))
  cfg.update(overrides)
  return cfg


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_same(a: list[dict], b: list[dict]):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(np.asarray(x[k], np.float32), np.asarray(y[k], np.float32), k)


def test_record_roundtrip_and_errors():
  for dtype in (np.float32, np.float16, ml_dtypes.bfloat16):
    ex = make_example(7, np.random.default_rng(1), dtype)
    back = records.deserialize(records.serialize(ex))
    assert back.keys() == ex.keys()
    for k, v in ex.items():
      if isinstance(v, str):
        assert back[k] == v
      else:
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)
  with pytest.raises(records.RecordError, match="magic"):
    records.deserialize(b"nope")
  with pytest.raises(records.RecordError, match="truncated"):
    records.deserialize(records.serialize(ex)[:-200])
  with pytest.raises(records.RecordError, match="ref_latents"):
    records.serialize(dict(ex, ref_latents=np.zeros((2, 1, 1, 1), np.float32)))
  person = np.zeros(LATENT[:3], np.uint8)
  person[:, 1:3, 2] = 1
  back = records.deserialize(records.serialize(dict(ex, person_mask=person)))
  np.testing.assert_array_equal(back["person_mask"], person)
  with pytest.raises(records.RecordError, match="person_mask"):
    records.serialize(dict(ex, person_mask=np.zeros((2, 2), np.uint8)))


def test_batches_have_static_shapes_and_valid_refs_first(encoded):
  batches = take(ip.create_dataset(config(encoded)), 8)
  for b in batches:
    assert b["video_latents"].shape == (4,) + LATENT
    assert b["ref_latents"].shape == (4, 6) + LATENT[1:]
    assert b["text_embeds"].shape == (4, 16, 6) and b["text_mask"].shape == (4, 16)
    assert b["ref_type"].dtype == np.int32 and b["task"].dtype == np.int32
    n = b["ref_mask"].sum(axis=1)
    for i in range(4):
      assert b["ref_mask"][i].tolist() == [True] * n[i] + [False] * (6 - n[i])
      assert (b["task"][i] == ip.VC) == (n[i] > 0)
      assert b["clean_frames"][i] == (b["task"][i] == schema.I2V)
      refs = b["ref_latents"][i, :n[i], 0, 0, 0].astype(np.float32)
      assert (refs // 1000 == b["record_index"][i]).all()     # refs come from the same record
      assert len(set(refs.tolist())) == n[i]                   # without repetition
      assert not b["ref_latents"][i, n[i]:].astype(np.float32).any()
      t = b["ref_type"][i, :n[i]]
      assert (np.diff(t) >= 0).all()                           # faces first, then bodies
  tasks = np.concatenate([b["task"] for b in batches])
  assert set(tasks.tolist()) == {0, 1, 2}


def test_task_mix_and_fixed_counts(encoded):
  only = lambda task: dict(t2v=float(task == "t2v"), i2v=float(task == "i2v"), vc=float(task == "vc"))
  b = next(ip.create_dataset(config(encoded, task_probs=only("t2v"))))
  assert not b["ref_mask"].any() and not b["clean_frames"].any()
  b = next(ip.create_dataset(config(encoded, task_probs=only("i2v"))))
  assert not b["ref_mask"].any() and (b["clean_frames"] == 1).all()
  cfg = config(encoded, task_probs=only("vc"), random_counts=False, num_faces=1, num_bodies=1)
  for b in take(ip.create_dataset(cfg), 4):
    assert (b["task"] == ip.VC).all() and (b["ref_mask"].sum(1) >= 1).all()
    assert ((b["ref_type"] == 0) & b["ref_mask"]).sum(1).max() <= 1
    assert ((b["ref_type"] == 1) & b["ref_mask"]).sum(1).max() <= 1


def test_choose_counts_respects_limits():
  opts = dict(random_counts=True, max_faces=5, max_bodies=5, r_max=4, num_faces=3, num_bodies=3)
  rng = np.random.default_rng(0)
  for _ in range(300):
    nf, nb = ip.choose_counts(rng, 3, 6, opts)
    assert 1 <= nf + nb <= 4 and nf <= 3 and nb <= 5
  assert ip.choose_counts(rng, 0, 0, opts) == (0, 0)


def test_same_seed_same_batches(encoded):
  a = take(ip.create_dataset(config(encoded)), 7)   # crosses an epoch boundary (23 records)
  b = take(ip.create_dataset(config(encoded)), 7)
  assert_same(a, b)
  c = take(ip.create_dataset(config(encoded, seed=1)), 7)
  assert not all(np.array_equal(x["record_index"], y["record_index"]) for x, y in zip(a, c))


def test_orbax_save_restore_resumes_exactly(encoded, tmp_path):
  it = ip.create_dataset(config(encoded))
  take(it, 3)
  manager = ocp.CheckpointManager(tmp_path / "ckpt")
  manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  manager.wait_until_finished()
  expected = take(it, 6)
  fresh = ip.create_dataset(config(encoded))
  manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  assert_same(take(fresh, 6), expected)
  manager.close()


@pytest.mark.parametrize("count", [2, 3])
def test_process_shards_are_disjoint_and_cover(encoded, count):
  seen = []
  for p in range(count):
    cfg = config(encoded, num_epochs=1, global_batch_size=count)
    seen.append([int(i) for b in ip.create_dataset(cfg, "train", p, count)
                 for i in b["record_index"]])
  for p in range(count):
    assert len(seen[p]) == len(set(seen[p]))
    for q in range(p):
      assert not set(seen[p]) & set(seen[q])
  assert sorted(sum(seen, [])) == list(range(N_RECORDS))


def test_corrupt_records_are_skipped_and_counted(tmp_path):
  write_shards(tmp_path, 12, shards=2, corrupt=(3, 8))
  before = ip.skipped_counts().get("undecodable", 0)
  cfg = config(tmp_path, num_epochs=1, global_batch_size=1, shuffle=False)
  got = sorted(int(b["record_index"][0]) for b in ip.create_dataset(cfg))
  assert got == [i for i in range(12) if i not in (3, 8)]
  assert ip.skipped_counts()["undecodable"] - before == 2


def test_to_global_on_a_mesh(encoded):
  from wildactor_jax.sharding import DEFAULT_RULES, create_mesh
  mesh = create_mesh([-1, 1, 1, 1])
  batch = next(ip.create_dataset(config(encoded, global_batch_size=jax.device_count())))
  out = batches.to_global(batch, mesh, DEFAULT_RULES)
  assert set(out) == set(schema.DEVICE_DTYPES)            # host-only keys stay on the host
  assert out["video_latents"].shape == batch["video_latents"].shape
  assert out["ref_latents"].sharding.spec[0] == ("data", "fsdp")
  np.testing.assert_array_equal(np.asarray(out["ref_mask"]), batch["ref_mask"])


def test_faces_seen_from_behind_are_never_face_references(tmp_path):
  """Faces 0, 1 are usable; 2 (back view), 3 (yaw 160) and 4 (visibility 0.1) never are. Bodies
  seen from behind (6) stay candidates."""
  yaw = np.asarray([0.0, 30.0, 175.0, -160.0, 10.0, 0.0, 180.0], np.float32)
  view = np.asarray([records.VIEWS.index(v) for v in
                     ("front", "left", "back", "back", "front", "front", "back")], np.int8)
  rng = np.random.default_rng(0)
  writer = array_record_module.ArrayRecordWriter(str(tmp_path / "train-00000-of-00001.array_record"),
                                                 "group_size:1")
  for i in range(6):
    ex = make_example(i, rng)
    writer.write(records.serialize(dict(
        ex, ref_latents=((1000.0 * i + np.arange(7))[:, None, None, None]
                         * np.ones((1,) + LATENT[1:])).astype(np.float32),
        ref_type=np.asarray([0, 0, 0, 0, 0, 1, 1], np.int8), ref_yaw=yaw, ref_view=view,
        ref_visibility=np.asarray([0.9, 0.8, 0.9, 0.9, 0.1, 1.0, 1.0], np.float32))))
  writer.close()
  cfg = config(tmp_path, task_probs=dict(vc=1.0), global_batch_size=6)
  faces, bodies = set(), set()
  for b in take(ip.create_dataset(cfg), 30):
    index = b["ref_latents"][..., 0, 0, 0].astype(np.float32) % 1000   # which reference
    faces |= set(index[b["ref_mask"] & (b["ref_type"] == 0)].astype(int).tolist())
    bodies |= set(index[b["ref_mask"] & (b["ref_type"] == 1)].astype(int).tolist())
  assert faces == {0, 1} and bodies == {5, 6}


def test_both_sources_yield_the_schema(encoded):
  """The records pipeline and the random source agree with `schema` on keys, dtypes, shapes."""
  from wildactor_jax.input import random_source
  cfg = ml_collections.ConfigDict(dict(
      data=config(encoded, frames=9, height=16, width=16, r_max=6, text_len=16, source="random"),
      model=dict(text_dim=6), vae=dict(kind="pixel", spatial_factor=4),
      text_encoder=dict(max_length=16)))
  shapes = schema.example_shapes(cfg)
  for name, batch in (("records", next(ip.create_dataset(cfg.data))),
                      ("random", next(random_source.create_dataset(cfg)))):
    assert set(batch) == set(schema.DTYPES), name
    for key, dtype in schema.DTYPES.items():
      got, want = batch[key].shape[1:], shapes[key]
      if key in ("video_latents", "ref_latents") and name == "records":
        got, want = got[:-1], want[:-1]  # the fixture's records have 8 latent channels, not 48
      assert got == want, (name, key)
      if key not in schema.FLOAT_KEYS:                      # floats keep the records' dtype
        assert batch[key].dtype == dtype, (name, key)


def test_no_tensorflow_on_the_training_path(encoded):
  code = ("import sys, ml_collections\n"
          "from wildactor_jax.input import records_source as ip\n"
          f"cfg = ml_collections.ConfigDict(dict(records={str(encoded)!r}, global_batch_size=2))\n"
          "next(ip.create_dataset(cfg))\n"
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_bad_config_is_a_clear_error(encoded, tmp_path):
  with pytest.raises(FileNotFoundError, match="train-"):
    ip.create_dataset(config(tmp_path))
  with pytest.raises(ValueError, match="multiple of the process count"):
    ip.create_dataset(config(encoded, global_batch_size=3), "train", 0, 2)
  with pytest.raises(ValueError, match="task_probs"):
    ip.create_dataset(config(encoded, task_probs=dict(t2v=0.0, i2v=0.0, vc=0.0)))


def test_cut_context_starts_i2v_clips_on_a_body_reference(encoded):
  """data.cut_context = 1: every i2v example's clean first latent frame is one of its record's
  body references (record i's reference j holds 1000 i + j), the rest of the clip its own; a
  record without body references keeps its own first frame; 0 changes nothing."""
  examples = make_examples(N_RECORDS)
  i2v = dict(t2v=0.0, i2v=1.0, vc=0.0)
  seen_cut = 0
  for b in take(ip.create_dataset(config(encoded, task_probs=i2v, cut_context=1.0)), 6):
    assert (b["clean_frames"] == 1).all() and not b["ref_mask"].any()
    for video, index in zip(b["video_latents"], b["record_index"]):
      ref_type = examples[index]["ref_type"]
      np.testing.assert_array_equal(video[1:], float(index))
      first = float(np.asarray(video[0], np.float32).flat[0])
      assert (np.asarray(video[0], np.float32) == first).all()
      if (ref_type == 1).any():
        assert first in {1000.0 * index + j for j in np.flatnonzero(ref_type == 1)}, (index, first)
        seen_cut += 1
      else:
        assert first == float(index)
  assert seen_cut > 0
  for b in take(ip.create_dataset(config(encoded, task_probs=i2v, cut_context=0.0)), 2):
    for video, index in zip(b["video_latents"], b["record_index"]):
      np.testing.assert_array_equal(video, float(index))
  with pytest.raises(ValueError, match="cut_context"):
    ip.create_dataset(config(encoded, cut_context=1.5))
