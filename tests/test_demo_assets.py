"""The demo's shipped pretrained parts: checked by sha256 against assets.json (a damaged or
swapped file is a one-line error), and the backbone export installs as a converter-format
checkpoint holding exactly the exported (bfloat16-rounded) weights."""
import json

import jax
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from wildactor_jax.demo import assets
from wildactor_jax.models import module_npz
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import FROZEN, backbone_hash, create_model, load_backbone

TINY = dict(dim=32, ffn_dim=48, num_heads=2, num_layers=2, in_channels=4, out_channels=4,
            text_dim=8, freq_dim=16, patch_size=(1, 1, 1), lora=False)


def exported(tmp_path):
  model = create_model(ModelConfig(**TINY), seed=1)
  meta = {"kind": "backbone", "config": dict(model.cfg.backbone_fields(),
                                             rope_max_seq_len=model.cfg.rope_max_seq_len)}
  return model, module_npz.save(model, str(tmp_path / assets.BACKBONE), meta, "bfloat16")


def test_manifest_checks_every_file(tmp_path):
  _, npz = exported(tmp_path)
  info = assets.describe(str(tmp_path), {assets.BACKBONE: {"command": "x", "dtype": "bfloat16"}})
  assert set(info["files"]) == {assets.BACKBONE}
  assert assets.verify(str(tmp_path))["files"][assets.BACKBONE]["command"] == "x"
  data = bytearray((tmp_path / assets.BACKBONE).read_bytes())
  data[-10] ^= 0xFF
  (tmp_path / assets.BACKBONE).write_bytes(bytes(data))
  with pytest.raises(assets.AssetError, match="sha256") as e:
    assets.verify(str(tmp_path))
  assert "\n" not in str(e.value) and "--from-scratch" in str(e.value)
  (tmp_path / assets.BACKBONE).unlink()
  with pytest.raises(assets.AssetError, match="missing"):
    assets.verify(str(tmp_path))
  with pytest.raises(assets.AssetError, match="assets.json: missing"):
    assets.verify(str(tmp_path / "nowhere"))


def test_installed_backbone_is_the_exported_weights_and_is_reused(tmp_path):
  model, npz = exported(tmp_path)
  out = str(tmp_path / "installed")
  assets.install_backbone(npz, out)
  loaded = load_backbone(out)
  want = jax.tree.map(lambda a: np.asarray(a, np.float32).astype(ml_dtypes.bfloat16)
                      .astype(np.float32), nnx.to_pure_dict(nnx.state(model, FROZEN)))
  got = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(loaded, FROZEN)))
  jax.tree.map(np.testing.assert_array_equal, got, want)
  # Installing the same export again keeps the checkpoint (and so its hash) as it is.
  h = backbone_hash(out)
  assets.install_backbone(npz, out)
  assert backbone_hash(out) == h
  bad = module_npz.save(model, str(tmp_path / "other.npz"), {"kind": "embedder"})
  with pytest.raises(assets.AssetError, match="not a backbone"):
    assets.install_backbone(bad, str(tmp_path / "b2"))


def test_shipped_assets_are_listed_and_intact():
  """The repository's own files: every shipped part is in assets.json with its sha256, and all
  together stay small (they live in git)."""
  info = assets.verify()
  assert set(info["files"]) == {assets.AUTOENCODER, assets.BACKBONE, assets.EMBEDDER,
                                assets.PROBES}
  assert sum(f["bytes"] for f in info["files"].values()) < 10_000_000
  for entry in info["files"].values():
    assert entry["command"] and entry["corpus"]["seed"] != 0  # never the demo's own actors
  json.dumps(info)


def test_shipped_probes_read_unseen_actors(tmp_path):
  """The shipped prompt probes (trained on the corpus's actors, seed 1) read the motion, camera
  move and per-frame yaw of freshly rendered actors of another seed well above chance
  (0.25, 0.33 and about 0.25)."""
  import subprocess
  import sys

  from wildactor_jax.demo import stages
  from wildactor_jax.eval import adherence, probes, raw
  root = tmp_path / "raw"
  subprocess.run([sys.executable, "data/synthetic_actors.py", "--out", str(root), "--actors",
                  "12", "--clips-per-actor", "2", "--seed", "7", "--size", str(stages.SIZE),
                  "--frames", str(stages.FRAMES)], cwd=stages.ROOT, check=True,
                 capture_output=True)
  ds = raw.load(str(root))
  probe = probes.load(f"{assets.SHIPPED}/{assets.PROBES}")
  read = probes.predict(probe, [raw.read_video(c.video) for c in ds.clips])
  motion = np.mean([m == c.motion for m, c in zip(read["motion"], ds.clips)])
  camera = np.mean([m == c.camera for m, c in zip(read["camera"], ds.clips)])
  yaw = np.mean([adherence.yaw_accuracy(y, probes.resample_yaws(c.yaws, probe.cfg.frames))
                 for y, c in zip(read["yaw"], ds.clips)])
  assert motion > 0.55 and camera > 0.75 and yaw > 0.4, (motion, camera, yaw)


def test_ablation_variants_flag_picks_a_subset_and_refuses_unknown_names(capsys):
  from wildactor_jax.demo import ablations, pipeline
  args = pipeline.parse_args(["--ablations", "--variants", "no_irope,no_aipa"])
  assert [v[0] for v in ablations.chosen_variants(args.variants)] == [
      "method", "no_aipa", "no_irope"]
  assert len(ablations.chosen_variants(pipeline.parse_args(["--ablations"]).variants)) == 5
  for names in (("no_rope",), ()):
    with pytest.raises(SystemExit, match="expected a comma-separated subset of no_aipa"):
      ablations.chosen_variants(names)
  with pytest.raises(SystemExit) as e:
    pipeline.parse_args(["--variants", "no_aipa"])
  assert e.value.code == 2 and "--variants: only with --ablations" in capsys.readouterr().err


def test_report_identity_along_the_clip_table():
  """The demo report's per-frame table: one row per scored condition in the report's column
  order, one column per sampled frame, the means as given; nothing when it was not scored."""
  from wildactor_jax.demo import report
  entry = lambda means: {"frame_index": [0, 8, 16], "retrieval_top1": {"mean": means,
                                                                       "ci95": [[0, 1]] * 3},
                         "identity_similarity": {"mean": means, "ci95": [[0, 1]] * 3}}
  over = {"first_frame": entry([0.71, 0.5, None]), "ground_truth": entry([0.95, 0.9, 0.88])}
  lines = report.over_time_table({"identity_over_time": over})
  assert lines[0] == "| condition | frame 0 | frame 8 | frame 16 |"
  assert lines[2] == "| real clips | 0.95 | 0.90 | 0.88 |"
  assert lines[3].startswith("| with refs, continued from the true first frame | 0.71 | 0.50 | n/a")
  assert len(lines) == 4
  assert report.over_time_table({}) == []
