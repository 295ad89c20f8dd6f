"""Generation from a trained checkpoint: output files, determinism, device-count independence,
and one clear error (exit 2, no output) per bad input."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from wildactor_jax import generate, media
from wildactor_jax.config_lib import load_config_file
from wildactor_jax.models import tokenizer, umt5
from wildactor_jax.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "a person in a red shirt waves"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """Two training steps of the tiny WildActor on the 8 host devices, with a pixel autoencoder
  and a small random UMT5 as its VAE and text encoder; returns (workdir, reference image)."""
  tmp = tmp_path_factory.mktemp("gen")
  tok = tokenizer.build_demo_tokenizer(PROMPT.split(), str(tmp / "tok"))
  umt5.save_random(str(tmp / "umt5"), umt5.UMT5Config(vocab_size=16, d_model=32, d_kv=8,
                                                        num_heads=2, d_ff=64, num_layers=1),
                   tokenizer_path=tok)
  config = load_config_file(os.path.join(ROOT, "configs", "wildactor_wan22_5b.py:tiny"))
  config.vae.update(kind="pixel", spatial_factor=4)
  config.text_encoder.update(path=str(tmp / "umt5"), tokenizer_path=tok, max_length=16)
  config.data.update(height=32, width=32, frames=5)
  config.mesh.shape = (1, 8, 1, 1)
  config.train.update(steps=2, warmup_steps=1, log_every=2, eval_every=0)
  config.checkpoint.every = 2
  config.sample.steps = 3
  workdir = str(tmp / "run")
  train_and_evaluate(config, workdir)
  face = tmp / "face.png"
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 24, 3), np.uint8)).save(face)
  return workdir, str(face), tmp


def gen(workdir, out, *extra):
  return generate.main(["--workdir", workdir, "--prompt", PROMPT, "--out", str(out), *extra])


def test_writes_video_sheet_and_is_deterministic(run, capsys):
  workdir, face, tmp = run
  a, b = tmp / "a.mp4", tmp / "b.mp4"
  assert gen(workdir, a, "--face", face, "--body", face, "--frames", "9", "--gif") == 0
  line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert line["video"] == str(a) and os.path.exists(line["contact_sheet"])
  assert os.path.exists(tmp / "a.gif")
  frames = media.read_mp4(str(a))
  assert frames.shape == (9, 32, 32, 3)
  assert gen(workdir, b, "--face", face, "--body", face, "--frames", "9") == 0
  assert np.array_equal(frames, media.read_mp4(str(b)))
  assert not [f for f in os.listdir(tmp) if f.startswith(".partial-")]


def test_one_device_restore_gives_the_same_video(run):
  workdir, face, tmp = run  # trained (and saved) on 8 devices
  eight, one = tmp / "eight.mp4", tmp / "one.mp4"
  assert gen(workdir, eight, "--face", face) == 0
  assert gen(workdir, one, "--face", face, "--mesh", "1,1,1,1") == 0
  np.testing.assert_allclose(media.read_mp4(str(eight)).astype(int),
                             media.read_mp4(str(one)).astype(int), atol=2)


@pytest.mark.parametrize("extra,message", [
    (["--face", "missing.png"], "no such file"),
    (["--face", "NOTIMAGE"], "not a decodable image"),
    (["--face", "FACE", "--height", "36"], "multiple of 8"),
    (["--face", "FACE", "--frames", "6"], "expected 1 + 4k"),
    (["--face", "FACE"] * 6, "too many references"),
    ([], "no references"),
])
def test_bad_input_exits_2_and_writes_nothing(run, capsys, extra, message):
  workdir, face, tmp = run
  junk = tmp / "junk.png"
  junk.write_bytes(b"not an image")
  extra = [face if e == "FACE" else str(junk) if e == "NOTIMAGE" else e for e in extra]
  out = tmp / "bad" / "x.mp4"
  assert gen(workdir, out, *extra) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert message in err[-1] and err[-1].startswith("error: ")
  assert not out.exists() and not out.with_suffix(".png").exists()


def test_missing_or_mismatched_checkpoint(run, capsys, tmp_path):
  workdir, face, tmp = run
  assert gen(str(tmp_path), tmp_path / "x.mp4", "--face", face) == 2
  assert "no finished checkpoint" in capsys.readouterr().err
  other = tmp_path / "other.py"
  other.write_text(open(os.path.join(workdir, "config.json")).read() and
                   "from wildactor_jax.config_lib import load_config_file\n"
                   "import json, ml_collections\n"
                   f"def get_config(arg=None):\n"
                   f"  c = ml_collections.ConfigDict(json.load(open({os.path.join(workdir, 'config.json')!r})))\n"
                   "  c.model.dim = 96\n  return c\n")
  assert gen(workdir, tmp_path / "y.mp4", "--face", face, "--config", str(other)) == 2
  assert "different model config" in capsys.readouterr().err
  assert not (tmp_path / "y.mp4").exists()


@pytest.mark.parametrize("make", ["folder", "png_folder", "parent_is_file"])
def test_bad_output_path_is_refused_before_any_work(run, capsys, tmp_path, make):
  workdir, face, _ = run
  out = tmp_path / "clip.mp4"
  if make == "folder":
    (out / "keep.txt").parent.mkdir()
    (out / "keep.txt").write_text("user file")
  elif make == "png_folder":
    (tmp_path / "clip.png").mkdir()
  else:
    (tmp_path / "notes").write_text("user file")
    out = tmp_path / "notes" / "clip.mp4"
  before = sorted(str(p) for p in tmp_path.rglob("*"))
  assert gen(workdir, out, "--face", face) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: --out") and "Traceback" not in err[0]
  assert ("existing folder" if make != "parent_is_file" else "cannot write there") in err[0]
  assert sorted(str(p) for p in tmp_path.rglob("*")) == before
  assert not (tmp_path / "clip.png").is_file()


def test_damaged_checkpoint_is_one_line_and_nothing_is_written(run, capsys, tmp_path):
  workdir, face, _ = run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  for f in (copy / "checkpoints" / "2" / "params").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(f.read_bytes()[:16])  # cut short, as by an interrupted copy
  out = tmp_path / "x.mp4"
  assert gen(str(copy), out, "--face", face) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("error: ") and "no checkpoint restores" in err[-1]
  assert "checkpoints/2" in err[-1] and not out.exists() and not out.with_suffix(".png").exists()
