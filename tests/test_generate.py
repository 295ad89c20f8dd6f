"""Generation from a trained checkpoint: output files, determinism, device-count independence,
and one clear error (exit 2, no output) per bad input, found before the model loads; Ctrl-C is
one line and exit status 130."""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys

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


@pytest.mark.parametrize("extra,message", [
    (["--cfg", "nan"], "--cfg nan: expected a finite number >= 0"),
    (["--cfg", "inf"], "--cfg inf: expected a finite number >= 0"),
    (["--cfg", "-3"], "--cfg -3.0: expected a finite number >= 0"),
    (["--shift", "nan"], "--shift nan: expected a finite number > 0"),
    (["--shift", "0"], "--shift 0.0: expected a finite number > 0"),
    (["--fps", "0"], "--fps 0: expected an integer >= 1"),
    (["--steps", "0"], "--steps 0: expected an integer >= 1"),
    (["--seed", str(2 ** 32)], "--seed 4294967296: expected an integer >= 0 and <= 4294967295"),
    (["--mesh", "1,2"], "--mesh 1,2: expected 4 comma-separated sizes"),
    (["--mesh", "1,-1,-1,1"], "--mesh 1,-1,-1,1: expected 4 comma-separated sizes"),
    # 1 + 4 x 25000 frames: 25001 latent frames, far beyond the 1024 positions of the RoPE table.
    (["--frames", "100001"], "beyond the model's table of 1024 (model.rope_max_seq_len); "
                             "expected at most 3577 frames per window"),
])
def test_numeric_flags_are_checked_before_the_model_loads(run, capsys, monkeypatch, extra,
                                                          message):
  """NaN or inf in --cfg/--shift used to sample a whole clip and write it black, exit 0."""
  from wildactor_jax.infer import restore
  workdir, face, tmp = run
  monkeypatch.setattr(restore, "load_run", lambda *a, **k: pytest.fail("the model was loaded"))
  out = tmp / "flags" / "x.mp4"
  assert gen(workdir, out, "--face", face, *extra) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("error: ") and message in err[-1], err[-1]
  assert not out.exists() and not out.with_suffix(".png").exists()


def test_non_finite_latents_write_nothing(run, capsys, monkeypatch):
  """A checkpoint whose trained weights hold NaN samples NaN latents: refused, nothing written
  (it used to be an all-black mp4 and exit 0)."""
  import jax
  from flax import nnx
  from wildactor_jax.infer import restore
  workdir, face, tmp = run
  real = restore.load_run

  def poisoned(*args, **kwargs):
    loaded = real(*args, **kwargs)
    lora = nnx.state(loaded.model, nnx.LoRAParam)
    nnx.update(loaded.model, jax.tree.map(lambda x: x * float("nan"), lora))
    return loaded

  monkeypatch.setattr(restore, "load_run", poisoned)
  out = tmp / "nan" / "x.mp4"
  assert gen(workdir, out, "--face", face) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("error: sampling produced") and "non-finite" in err[-1], err[-1]
  assert not out.parent.exists() or not os.listdir(out.parent)


def test_a_truncated_prompt_is_said_on_the_console(run, caplog):
  workdir, face, tmp = run
  prompt = "waves " * 20000  # 120000 characters, 20000 tokens; the text encoder reads 16
  with caplog.at_level(logging.WARNING):
    assert generate.main(["--workdir", workdir, "--prompt", prompt, "--face", face,
                          "--out", str(tmp / "long.mp4")]) == 0
  said = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
  assert len(said) == 1 and "16 tokens" in said[0] and "20000 tokens" in said[0], said
  assert "120000 characters" in said[0]


def test_ctrl_c_during_restore_exits_130(run, tmp_path):
  """SIGINT while the checkpoint restores (and compiles) used to end in a traceback and a
  SIGSEGV at interpreter exit. The restore is wrapped to say when it starts; the signal lands
  inside the real restore."""
  workdir, face, _ = run
  out = tmp_path / "x.mp4"
  script = (
      "import signal, sys\n"
      # A shell's background job starts with SIGINT ignored, and Python keeps that: restore
      # the handler an interactive terminal gives, so the signal means what Ctrl-C means.
      "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
      "from wildactor_jax import cli, generate\n"
      "from wildactor_jax.infer import restore\n"
      "real = restore.load_run\n"
      "def announced(*a, **k):\n"
      "  print('restoring', file=sys.stderr, flush=True)\n"
      "  return real(*a, **k)\n"
      "restore.load_run = announced\n"
      "cli.script_exit(generate.main(sys.argv[1:]))\n")
  cmd = [sys.executable, "-c", script, "--workdir", workdir, "--prompt", PROMPT, "--face", face,
         "--out", str(out)]
  proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  lines = []
  for line in proc.stderr:
    lines.append(line)
    if line.strip() == "restoring":
      proc.send_signal(signal.SIGINT)
      break
  _, rest = proc.communicate(timeout=120)
  err = "".join(lines) + rest
  assert proc.returncode == 130, err[-3000:]
  assert err.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in err
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


def test_existing_output_is_kept_unless_overwrite_asks(run, capsys, tmp_path):
  """An earlier contact sheet beside OUT is the user's: refused (one line, nothing written),
  then replaced when --overwrite asks."""
  workdir, face, _ = run
  out, sheet = tmp_path / "clip.mp4", tmp_path / "clip.png"
  sheet.write_text("an earlier contact sheet")
  assert gen(workdir, out, "--face", face, "--frames", "5") == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: --out") and "--overwrite" in err[0], err
  assert str(sheet) in err[0] and sheet.read_text() == "an earlier contact sheet"
  assert not out.exists()
  assert gen(workdir, out, "--face", face, "--frames", "5", "--overwrite") == 0
  assert out.exists() and sheet.read_bytes()[:4] == b"\x89PNG"


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
