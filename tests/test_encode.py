"""Pixel autoencoder and the encode job: raw TFDS records -> encoded training records."""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from array_record.python import array_record_module

from data import build_actor18m, synthetic_actors
from wildactor_jax import encode, media
from wildactor_jax.input import records, records_source
from wildactor_jax.models import tokenizer as tk
from wildactor_jax.models import umt5
from wildactor_jax.models.pixel_autoencoder import PixelAutoencoder

REPO = pathlib.Path(__file__).resolve().parents[1]

ENV = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
TEXT_LEN = 48


def test_pixel_autoencoder_geometry_and_exact_roundtrip():
  vae = PixelAutoencoder()
  assert (vae.z_dim, vae.temporal_factor, vae.spatial_factor) == (48, 4, 4)
  rng = np.random.default_rng(0)
  groups = rng.uniform(-1, 1, (2, 3, 8, 12, 3)).astype(np.float32)  # frame 0 + 2 groups of 4
  video = np.concatenate([groups[:, :1], np.repeat(groups[:, 1:], 4, axis=1)], axis=1)
  z = vae.encode(video)
  assert z.shape == (2, 3, 2, 3, 48) == (2,) + vae.latent_shape(9, 8, 12)
  np.testing.assert_array_equal(np.asarray(vae.decode(z)), video)
  # A varying group is averaged (Wan groups 4 frames per latent frame after the first).
  noisy = rng.uniform(-1, 1, (1, 5, 8, 8, 3)).astype(np.float32)
  back = np.asarray(vae.decode(vae.encode(noisy)))
  np.testing.assert_allclose(back[0, 1], noisy[0, 1:].mean(0), atol=1e-6)
  np.testing.assert_array_equal(back[0, 0], noisy[0, 0])
  with pytest.raises(ValueError, match="1 \\+ 4k"):
    vae.encode(np.zeros((1, 4, 8, 8, 3), np.float32))


def test_pixel_autoencoder_normalises_latents():
  """(pixels - mean) / std, as the Wan VAE normalises its latents; decode undoes it."""
  plain, norm = PixelAutoencoder(2), PixelAutoencoder(2, latents_mean=0.4, latents_std=0.25)
  video = np.random.default_rng(1).uniform(-1, 1, (1, 5, 8, 8, 3)).astype(np.float32)
  z = np.asarray(norm.encode(video))
  np.testing.assert_allclose(z, (np.asarray(plain.encode(video)) - 0.4) / 0.25, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(norm.decode(z)), np.asarray(plain.decode(plain.encode(video))),
                             atol=1e-6)
  with pytest.raises(ValueError, match="latents_std"):
    PixelAutoencoder(2, latents_std=0.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """Raw TFDS records (3 actors x 2 clips, 2 shards per split) and a tiny random UMT5."""
  root = tmp_path_factory.mktemp("enc")
  # Describing prompts: unique per clip, so the test can key clips by prompt.
  synthetic_actors.generate(str(root / "media"), 3, 2, seed=11, size=32, frames=5, workers=1,
                            describe_appearance=True)
  build_actor18m.build(str(root / "media" / "manifest.jsonl"), str(root / "raw"), num_shards=2)
  prompts = [json.loads(l)["prompt"] for l in (root / "media" / "manifest.jsonl").open()]
  words = sorted({w for p in prompts for w in re.findall(r"\w+", p.lower())})
  tok = tk.build_demo_tokenizer(words, str(root / "tok" / "tokenizer.json"))
  cfg = umt5.UMT5Config(vocab_size=len(words) + 3, d_model=16, d_kv=4, num_heads=4, d_ff=32,
                        num_layers=2)
  umt5.save_random(str(root / "umt5"), cfg, seed=0, tokenizer_path=tok)
  return root


def make_config(world, height=32, width=48) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      data=dict(frames=5, height=height, width=width),
      vae=dict(kind="pixel", path="", spatial_factor=4),
      text_encoder=dict(path=str(world / "umt5"), tokenizer_path="", max_length=TEXT_LEN)))


def read_all(path) -> list[dict]:
  reader = array_record_module.ArrayRecordReader(str(path))
  out = [records.deserialize(b) for b in reader.read(list(range(reader.num_records())))]
  reader.close()
  return out


def test_encode_writes_one_shard_per_input_shard(world, tmp_path):
  out = tmp_path / "enc"
  summary = encode.run(make_config(world), str(world / "raw"), str(out), batch_size=2,
                       dtype="float32", progress=False)
  assert summary == {"written": 6, "skipped": {}, "shards_done": 4, "shards_reused": 0}
  shards = sorted(p.name for p in out.glob("*.array_record"))
  assert shards == [f"{s}-{i:05d}-of-00002.array_record" for s in ("test", "train") for i in (0, 1)]
  manifest = {json.loads(l)["prompt"]: json.loads(l)
              for l in (world / "media" / "manifest.jsonl").open()}
  vae = PixelAutoencoder(4)
  tokenizer = umt5.load_text_encoder(str(world / "umt5"), text_len=TEXT_LEN).tokenizer
  examples = [ex for shard in shards for ex in read_all(out / shard)]
  assert len(examples) == 6 and len({ex["key"] for ex in examples}) == 6
  for ex in examples:
    row = manifest[ex["prompt"]]
    assert ex["actor_id"] == row["actor_id"]
    assert ex["video_latents"].shape == (2, 8, 12, 48) and ex["video_latents"].dtype == np.float32
    assert ex["ref_latents"].shape == (len(row["refs"]), 8, 12, 48)
    assert ex["ref_type"].tolist() == [0 if r["region"] == "face" else 1 for r in row["refs"]]
    np.testing.assert_allclose(ex["ref_yaw"], [r["angle"] for r in row["refs"]], atol=1e-4)
    assert [records.VIEWS[v] for v in ex["ref_view"]] == [r["view"] for r in row["refs"]]
    n_tokens = int(tokenizer([ex["prompt"]], TEXT_LEN)[1].sum())  # padding tokens dropped
    assert ex["text_embeds"].shape == (n_tokens, 16) and ex["text_mask"].all()
    # The latents are the pixel autoencoder's encoding of the decoded, cover-cropped clip ...
    clip = encode.decode_clip((world / "media" / row["video"]).read_bytes(), 5, 32, 48)
    np.testing.assert_allclose(ex["video_latents"], np.asarray(vae.encode(clip[None]))[0], atol=1e-6)
    # ... and each reference is one latent frame of the letterboxed image at video resolution.
    image = media.fit_image((world / "media" / row["refs"][0]["path"]).read_bytes(), 32, 48)
    np.testing.assert_allclose(ex["ref_latents"][0],
                               np.asarray(vae.encode(image[None, None]))[0, 0], atol=1e-6)
  assert json.loads((out / "encode_info.json").read_text())["z_dim"] == 48

  # The pipeline reads what the job wrote.
  data = ml_collections.ConfigDict(dict(records=str(out), global_batch_size=2, r_max=4,
                                        text_len=TEXT_LEN))
  batch = next(records_source.create_dataset(data))
  assert batch["video_latents"].shape == (2, 2, 8, 12, 48)
  assert batch["ref_latents"].shape == (2, 4, 8, 12, 48)


def test_resumable_and_sharded_over_processes(world, tmp_path):
  out = tmp_path / "enc"
  cfg = make_config(world)
  parts = [encode.run(cfg, str(world / "raw"), str(out), batch_size=2, process_index=p,
                      process_count=2, progress=False) for p in (0, 1)]
  assert [p["shards_done"] for p in parts] == [2, 2]
  assert sum(p["written"] for p in parts) == 6
  stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.array_record")}
  assert len(stamps) == 4
  again = encode.run(cfg, str(world / "raw"), str(out), batch_size=2, progress=False)
  assert again == {"written": 0, "skipped": {}, "shards_done": 0, "shards_reused": 4}
  victim = sorted(stamps)[0]
  (out / victim).unlink()
  redo = encode.run(cfg, str(world / "raw"), str(out), batch_size=2, progress=False)
  assert (redo["shards_done"], redo["shards_reused"]) == (1, 3)
  for name, stamp in stamps.items():
    if name != victim:
      assert (out / name).stat().st_mtime_ns == stamp  # finished shards are not rewritten
  assert not [p for p in os.listdir(out) if ".tmp" in p]
  with pytest.raises(ValueError, match="encode_info.json"):
    encode.run(make_config(world, height=64, width=64), str(world / "raw"), str(out),
               progress=False)


def test_cli(world, tmp_path):
  cfg_file = tmp_path / "encode_cfg.py"
  cfg_file.write_text(
      "import ml_collections\n\n\ndef get_config():\n"
      f"  return ml_collections.ConfigDict({make_config(world).to_dict()!r})\n")
  out = tmp_path / "enc"
  cmd = [sys.executable, "-m", "wildactor_jax.encode", f"--config={cfg_file}",
         f"--records={world / 'raw'}", f"--out={out}", "--splits=train"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=ENV, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary["shards_done"] == 2 and summary["written"] >= 1
  assert sorted(p.name for p in out.glob("*.array_record")) == [
      "train-00000-of-00002.array_record", "train-00001-of-00002.array_record"]
  bad = subprocess.run(cmd[:4] + [f"--records={tmp_path / 'nothing'}", f"--out={out}"],
                       capture_output=True, text=True, timeout=240, env=ENV, cwd=REPO)
  assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error: --records")


def test_wan_vae_kind(world, tmp_path):
  """kind "wan": a tiny random Wan2.2-style VAE restored replicated over the local devices."""
  from wildactor_jax.models import vae as wan_vae
  tiny = dict(base_dim=8, decoder_base_dim=12, z_dim=8, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
              temperal_downsample=[False, True, True], is_residual=True, in_channels=12,
              out_channels=12, patch_size=2, scale_factor_spatial=16)
  wan_vae.save_vae(wan_vae.init_vae(tiny, seed=1), str(tmp_path / "vae"))
  cfg = make_config(world, height=32, width=32)
  cfg.vae = ml_collections.ConfigDict(dict(kind="wan", path=str(tmp_path / "vae")))
  out = tmp_path / "enc"
  summary = encode.run(cfg, str(world / "raw"), str(out), splits=["test"], dtype="float32",
                       progress=False)
  assert summary["written"] >= 1 and summary["skipped"] == {}
  ex = read_all(sorted(out.glob("test-*.array_record"))[0])[0]
  assert ex["video_latents"].shape == (2, 2, 2, 8)
  assert ex["ref_latents"].shape[1:] == (2, 2, 8)
  model = wan_vae.load_vae(str(tmp_path / "vae"))
  manifest = {json.loads(l)["prompt"]: json.loads(l)
              for l in (world / "media" / "manifest.jsonl").open()}
  clip = encode.decode_clip((world / "media" / manifest[ex["prompt"]]["video"]).read_bytes(),
                            5, 32, 32)
  np.testing.assert_allclose(ex["video_latents"], np.asarray(model.encode(clip[None]))[0],
                             rtol=1e-4, atol=1e-4)
  info = json.loads((out / "encode_info.json").read_text())
  assert (info["vae"], info["z_dim"], info["spatial_factor"]) == ("wan", 8, 16)


def test_person_boxes_become_each_records_person_mask(world, tmp_path):
  """--person_boxes: each clip's body boxes (the renderer's annotations.jsonl) become its
  latent-grid person_mask; a clip without a row gets none and is counted; the pipeline serves
  the masks; masked and unmasked records never share a folder; a short row is a clear error."""
  from wildactor_jax.input import person_mask
  notes = [json.loads(l) for l in (world / "media" / "annotations.jsonl").open()]
  boxes = tmp_path / "boxes.jsonl"
  boxes.write_text("".join(json.dumps(n) + "\n" for n in notes[1:]))  # the first clip unboxed
  out = tmp_path / "enc"
  summary = encode.run(make_config(world), str(world / "raw"), str(out), batch_size=2,
                       dtype="float32", progress=False, person_boxes=str(boxes))
  assert summary["written"] == 6 and summary["unboxed"] == 1
  video_of = {json.loads(l)["prompt"]: json.loads(l)["video"]
              for l in (world / "media" / "manifest.jsonl").open()}
  by_video = {n["video"]: n["body_box"] for n in notes}
  examples = [ex for shard in sorted(out.glob("*.array_record")) for ex in read_all(shard)]
  for ex in examples:
    video = video_of[ex["prompt"]]
    if video == notes[0]["video"]:
      assert "person_mask" not in ex
      continue
    want = person_mask.latent_mask(np.asarray(by_video[video])[:5], 4, 8, 12)
    np.testing.assert_array_equal(ex["person_mask"], want)
    assert 0 < want.mean() < 1                       # the figure, not the whole frame
  assert json.loads((out / "encode_info.json").read_text())["person_boxes"] is True
  data = ml_collections.ConfigDict(dict(records=str(out), global_batch_size=6, r_max=4,
                                        text_len=TEXT_LEN, shuffle=False))
  batch = next(records_source.create_dataset(data))
  assert batch["person_mask"].shape == (6, 2, 8, 12) and batch["person_mask"].dtype == bool
  assert 0 < batch["person_mask"].mean() < 1
  with pytest.raises(ValueError, match="encode_info.json"):  # the same folder without boxes
    encode.run(make_config(world), str(world / "raw"), str(out), progress=False)
  boxes.write_text(json.dumps(dict(notes[0], body_box=notes[0]["body_box"][:3])) + "\n")
  with pytest.raises(ValueError, match=f"boxes.jsonl: {notes[0]['video']}: 3 body boxes"):
    encode.run(make_config(world), str(world / "raw"), str(tmp_path / "enc2"), batch_size=2,
               progress=False, person_boxes=str(boxes))
  assert not list((tmp_path / "enc2").glob("*.array_record"))
  with pytest.raises(FileNotFoundError, match="--person_boxes .*missing.jsonl: no such file"):
    encode.run(make_config(world), str(world / "raw"), str(tmp_path / "enc3"),
               person_boxes=str(tmp_path / "missing.jsonl"))
