"""A run's workdir is never lost or mixed up: damaged checkpoints fall back to the newest good
step, a changed model config or another live trainer is refused before anything is written, and
a moved backbone is still the same backbone. Errors are one line (exit 2 for the CLI) and leave
the user's files as they were."""
from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from wildactor_jax.config_lib import load_config_file
from wildactor_jax.infer import load_run
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import backbone_hash, create_model, save_backbone
from wildactor_jax.train import train_and_evaluate
from wildactor_jax.train_lib import checkpoint as ckpt_lib, state as state_lib, workdir as workdir_lib
from wildactor_jax.input import batches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/wildactor_wan22_5b.py:tiny"
CLI_ARGS = ["--config.train.steps=4", "--config.train.warmup_steps=1",
            "--config.checkpoint.every=2", "--config.train.eval_every=0"]


def tiny_config():
  config = load_config_file(os.path.join(ROOT, CONFIG))
  config.train.update(steps=4, warmup_steps=1, log_every=4, eval_every=0)
  config.checkpoint.update(every=2, async_save=False)
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny run with checkpoints at steps 2 and 4, trained (by the CLI) on one device: the
  arrays' data then sits apart from the OCDBT index, as a one-accelerator run's does (saved
  from 8 host devices both share one file), so damaged data fails in the array reads
  themselves. The tests restore it onto 8 devices."""
  workdir = tmp_path_factory.mktemp("run") / "w"
  r = cli(workdir, "--config.train.log_every=4", devices=1)
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir


def snapshot(folder) -> dict[str, bytes]:
  return {os.path.relpath(p, folder): open(p, "rb").read()
          for p in glob.glob(os.path.join(folder, "**"), recursive=True) if os.path.isfile(p)}


def damage(step_dir, kind: str) -> None:
  if kind == "manifest":
    os.remove(os.path.join(step_dir, "train", "manifest.ocdbt"))
  elif kind in ("truncated", "train_truncated"):
    # params: every data file; train: the arrays' data (ocdbt.process_*/d), not the index
    pattern = ("params/**/d/*" if kind == "truncated" else "train/ocdbt.process_*/d/*")
    for f in glob.glob(os.path.join(step_dir, pattern), recursive=True):
      with open(f, "r+b") as fh:
        fh.truncate(16)
  elif kind == "process_json":
    os.remove(os.path.join(step_dir, "data", "process_0-of-1.json"))


def copy_run(trained, tmp_path, *damaged: tuple[int, str]):
  workdir = tmp_path / "w"
  shutil.copytree(trained, workdir)
  for step, kind in damaged:
    damage(workdir / "checkpoints" / str(step), kind)
  return workdir


def cli(workdir, *extra, entry=("-m", "wildactor_jax.train"), devices=8):
  cmd = [sys.executable, *entry, "--config", CONFIG, "--workdir", str(workdir), *CLI_ARGS, *extra]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def one_line_error(r) -> str:
  assert r.returncode == 2, r.stderr[-3000:]
  last = r.stderr.strip().splitlines()[-1]
  tail = "\n".join(r.stderr.strip().splitlines()[-20:])  # what the user sees last
  assert last.startswith("error: ") and "Traceback" not in tail, r.stderr[-3000:]
  return last


@pytest.mark.parametrize("kind", ["manifest", "truncated", "process_json"])
def test_damaged_newest_checkpoint_falls_back_and_is_kept(trained, tmp_path, caplog, kind):
  workdir = copy_run(trained, tmp_path, (4, kind))
  bad = snapshot(workdir / "checkpoints" / "4")
  config = tiny_config()
  rs = state_lib.setup_from_config(config)
  checkpointer = ckpt_lib.Checkpointer(str(workdir), keep=3, async_save=False)
  source = batches.create_source(config, "train")
  with caplog.at_level(logging.WARNING):
    step, (state, _) = checkpointer.restore_newest_good(
        lambda s: checkpointer.restore(s, rs.setup.abstract_train, source), move_damaged=True)
  assert step == 2 and int(state["step"]) == 2
  assert checkpointer.all_steps() == [2]  # step 4 can be saved again
  checkpointer.close()
  assert f"{workdir}/checkpoints/4 is damaged" in caplog.text
  assert snapshot(workdir / "damaged_checkpoints" / "4") == bad  # moved whole, not deleted


def test_train_cli_resumes_from_the_newest_good_checkpoint(trained, tmp_path):
  """The train/ arrays of the newest step cut short, on slow storage (tests/faults.py: reads
  straggle): the failed read leaves Orbax's other reads in flight, and what they raise
  afterwards used to print 98-99 tracebacks (6400 lines) around the one warning line."""
  workdir = copy_run(trained, tmp_path, (4, "train_truncated"))
  r = cli(workdir, entry=["tests/faults.py", "--slow_reads_s=0.005"])
  assert r.returncode == 0, r.stderr[-3000:]
  assert f"{workdir}/checkpoints/4 is damaged" in r.stderr and "resuming from" in r.stderr
  assert (workdir / "damaged_checkpoints" / "4" / "params").is_dir()
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  noise = ("Traceback", "Exception ignored", "never retrieved", "Event loop is closed")
  assert not [n for n in noise if n in r.stderr], r.stderr[-3000:]
  assert len([l for l in r.stderr.splitlines() if "is damaged" in l]) == 1


def test_no_good_checkpoint_is_one_line_and_changes_nothing(trained, tmp_path):
  workdir = copy_run(trained, tmp_path, (4, "manifest"), (2, "process_json"))
  before = snapshot(workdir)
  line = one_line_error(cli(workdir))
  assert "no checkpoint restores" in line and "checkpoints/4" in line
  assert snapshot(workdir) == before


def test_generate_restore_falls_back_but_never_changes_the_workdir(trained, tmp_path, caplog):
  workdir = copy_run(trained, tmp_path, (4, "truncated"))  # inference reads only params/
  before = snapshot(workdir)
  with caplog.at_level(logging.WARNING):
    run = load_run(str(workdir), [1, 1, 1, 1])
  assert run.step == 2 and "checkpoints/4 is damaged" in caplog.text
  with pytest.raises(ckpt_lib.RunError, match="no checkpoint restores.*checkpoints/4"):
    load_run(str(workdir / "checkpoints" / "4"), [1, 1, 1, 1])  # named explicitly: no fallback
  assert snapshot(workdir) == before


def test_changed_model_config_is_refused_before_writing_cli(trained, tmp_path):
  workdir = copy_run(trained, tmp_path)
  before = snapshot(workdir)
  line = one_line_error(cli(workdir, "--config.model.lora_rank=16"))
  assert "model.lora_rank: 8 -> 16" in line and "--allow_config_change" in line
  assert snapshot(workdir) == before  # config.json included


@pytest.mark.parametrize("field", ["aipa", "irope"])
def test_changed_model_config_without_new_shapes_is_refused_too(trained, tmp_path, field):
  workdir = copy_run(trained, tmp_path)
  before = snapshot(workdir)
  config = tiny_config()
  config.model[field] = False
  with pytest.raises(ckpt_lib.RunError, match=f"model.{field}: True -> False.*allow_config_change"):
    train_and_evaluate(config, str(workdir))
  assert snapshot(workdir) == before


def test_allow_config_change_resumes_only_same_shapes(trained, tmp_path):
  workdir = copy_run(trained, tmp_path)
  config = tiny_config()
  config.model.lora_rank = 16
  with pytest.raises(ckpt_lib.RunError, match="lora_rank: 8 -> 16.*changes the shapes"):
    train_and_evaluate(config, str(workdir), allow_config_change=True)
  config = tiny_config()
  config.model.irope = False
  config.train.steps = 6
  assert train_and_evaluate(config, str(workdir), allow_config_change=True)["step"] == 6
  assert workdir_lib.read_config(str(workdir)).model.irope is False


def test_changed_learning_rate_is_refused_and_allowed_keeps_files_consistent(trained, tmp_path):
  """Any config change on a restart (here the learning rate) is refused with the diff before
  anything is written; allowed, config.json and hparams.json both say the new value."""
  workdir = copy_run(trained, tmp_path)
  before = snapshot(workdir)
  config = tiny_config()
  config.train.learning_rate = 2e-3
  with pytest.raises(ckpt_lib.RunError, match=r"config.json: this run's config differs from the "
                     r"saved one \(train.learning_rate: 0.001 -> 0.002\).*--allow_config_change"):
    train_and_evaluate(config, str(workdir))
  assert snapshot(workdir) == before
  config.train.log_every = 2  # how a run is watched may change freely
  config.checkpoint.keep = 5
  train_and_evaluate(config, str(workdir), allow_config_change=True)
  saved = json.loads((workdir / "config.json").read_text())
  hparams = json.loads((workdir / "hparams.json").read_text())
  assert saved["train"]["learning_rate"] == hparams["train.learning_rate"] == 2e-3
  flat = workdir_lib.flatten(saved)
  assert set(hparams) == set(flat)
  assert {k: v for k, v in hparams.items() if not isinstance(flat[k], list)} == {
      k: v for k, v in flat.items() if not isinstance(v, list)}


@pytest.mark.parametrize("field,value,message", [
    ("model.lora_targets", ("q", "norm"), r"config.model.lora_targets \['norm'\]: expected a "
                                          r"subset of q, k, v, o, ffn_in, ffn_out"),
    ("model.num_heads", 3, r"config.model.dim \d+ is not divisible by model.num_heads 3"),
    ("train.text_dropout", 1.0, r"config.train.text_dropout 1.0: expected a rate in \[0, 1\)"),
])
def test_a_bad_setting_is_one_line_and_writes_nothing(tmp_path, field, value, message):
  """A value the model or trainer refuses (ModelConfig's checks used to surface as a traceback
  from inside the run, after the workdir was made)."""
  config = tiny_config()
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ckpt_lib.RunError, match=message):
    train_and_evaluate(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_typo_in_a_config_override_is_one_line_exit_2(tmp_path):
  """A typo'd override used to be a 55-line traceback, exit 1."""
  r = subprocess.run([sys.executable, "-m", "wildactor_jax.train", "--workdir",
                      str(tmp_path / "w"), "--config", CONFIG, "--config.train.stpes=4"],
                     cwd=ROOT, capture_output=True, text=True,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300)
  assert one_line_error(r) == (f"error: --config.train.stpes: {CONFIG} has no field train.stpes "
                               "(closest: train.steps)")
  said = [l for l in r.stderr.splitlines()
          if l.strip() and not l.startswith(("I0000", "WARNING: All"))]
  assert len(said) == 1, said  # nothing but the line
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("args,message", [
    (["--config.trian.steps=4"], f"--config.trian.steps: {CONFIG} has no field trian "
                                 "(closest: train)"),
    (["--config.train.steps.x=4"], f"--config.train.steps.x: {CONFIG} has no field "
                                   "train.steps.x (train.steps is a value, not a section)"),
    (["--config.train.steps=four"], "flag --config.train.steps=four: invalid literal for int()"),
    (["--config=configs/no_such.py"], "--config configs/no_such.py: no such config file "
                                      "configs/no_such.py"),
    (["--config=configs/no_such.py", "--config.train.steps=4"],
     "--config configs/no_such.py: no such config file configs/no_such.py"),
    (["--config=configs/wildactor_wan22_5b.py:v9"], "the config failed to load (ValueError: "
                                                    "mesh preset 'v9'"),
    (["--nosuch=1"], "Unknown command line flag 'nosuch'"),
])
def test_bad_config_flag_is_one_line_exit_2(monkeypatch, capsys, args, message):
  """The trainer's flags (a config file flag, as train.py defines it), parsed in-process."""
  from absl import flags
  from ml_collections import config_flags
  from wildactor_jax import cli
  monkeypatch.chdir(ROOT)
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config", flag_values=values, lock_config=True)
  argv = ["train"] + (["--config", CONFIG] if not args[0].startswith("--config=") else []) + args
  monkeypatch.setattr(sys, "argv", argv)  # ml_collections reads the overrides from sys.argv
  with pytest.raises(SystemExit) as exit_:
    cli.parse_absl_flags(argv, values)
  err = capsys.readouterr().err.strip().splitlines()
  assert exit_.value.code == 2 and len(err) == 1, err
  assert err[0].startswith("error: ") and message in err[0], err[0]


def test_unreachable_bucket_is_one_line_naming_it(monkeypatch, capsys, tmp_path):
  """No network: TensorFlow's GCS client (epath's default) cannot resolve its proxy, as it
  could not resolve storage.googleapis.com without one; nothing leaves this machine. Training
  used to end in a traceback, and generate said "no finished checkpoint"."""
  from wildactor_jax import fs, generate
  for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
    monkeypatch.setenv(name, "http://proxy.invalid:1")
  monkeypatch.setenv("EPATH_USE_TF", "true")
  monkeypatch.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "offline")
  monkeypatch.setenv("NO_GCE_CHECK", "true")
  bucket = "gs://wildactor-offline"
  reason = r"gs://wildactor-offline: cannot reach the bucket for .*Could not resolve"
  with pytest.raises(fs.FsError, match=reason):
    train_and_evaluate(tiny_config(), f"{bucket}/run")
  out = tmp_path / "x.mp4"
  face = tmp_path / "face.png"
  face.write_bytes(b"")
  assert generate.main(["--workdir", f"{bucket}/run", "--prompt", "p", "--face", str(face),
                        "--out", str(out)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and re.match("error: " + reason, err[0]), err
  assert not out.exists()


def test_moved_backbone_is_the_same_backbone(tmp_path, caplog):
  config = tiny_config()
  cfg = ModelConfig.from_mapping(config.model)
  save_backbone(create_model(cfg, seed=3), str(tmp_path / "a"))
  shutil.copytree(tmp_path / "a", tmp_path / "bucket_copy")
  assert backbone_hash(str(tmp_path / "a")) == backbone_hash(str(tmp_path / "bucket_copy"))
  config.backbone_path = str(tmp_path / "a")
  saved = {"backbone": ckpt_lib.backbone_record(config)}
  config.backbone_path = str(tmp_path / "bucket_copy")
  with caplog.at_level(logging.INFO):
    ckpt_lib.check_backbone(saved, ckpt_lib.backbone_record(config), "ckpts")
  assert "now read from " + str(tmp_path / "bucket_copy") in caplog.text
  shutil.copytree(tmp_path / "a", tmp_path / "other")
  with open(tmp_path / "other" / "config.json", "a") as fh:
    fh.write("\n")  # any change of content is another backbone
  config.backbone_path = str(tmp_path / "other")
  with pytest.raises(ckpt_lib.BackboneMismatchError, match="trained on backbone"):
    ckpt_lib.check_backbone(saved, ckpt_lib.backbone_record(config), "ckpts")


def test_second_trainer_is_refused(tmp_path):
  workdir = tmp_path / "w"
  with workdir_lib.WorkdirLock(str(workdir)):
    before = snapshot(workdir)
    line = one_line_error(cli(workdir))
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in line
    assert snapshot(workdir) == before  # only our lock file
  assert not os.listdir(workdir)  # released


def test_stale_lock_is_taken_over_and_foreign_host_refused(tmp_path, caplog):
  workdir = tmp_path / "w"
  workdir.mkdir()
  dead = subprocess.Popen(["true"])
  dead.wait()
  lock = workdir / workdir_lib.LOCK
  lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}))
  with caplog.at_level(logging.WARNING):
    with workdir_lib.WorkdirLock(str(workdir)):
      assert json.loads(lock.read_text())["pid"] == os.getpid()
  assert "stale lock" in caplog.text and not lock.exists()
  lock.write_text(json.dumps({"pid": dead.pid, "host": "elsewhere", "started": 0}))
  with pytest.raises(ckpt_lib.RunError, match="host elsewhere.*another host"):
    workdir_lib.WorkdirLock(str(workdir)).acquire()
  assert json.loads(lock.read_text())["host"] == "elsewhere"  # someone else's: left alone


def test_checkpoints_from_before_the_params_item_still_restore(trained, tmp_path):
  """Older checkpoints hold the trained parameters inside `train`: training and load_run both
  restore them, to the same values as the current layout."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  config = tiny_config()
  rs = state_lib.setup_from_config(config)
  new = ckpt_lib.Checkpointer(str(trained), async_save=False, read_only=True)
  state, meta = new.restore(4, rs.setup.abstract_train)
  new.close()
  legacy_dir = tmp_path / "legacy"
  legacy = ckpt_lib.Checkpointer(str(legacy_dir), async_save=False)
  legacy.manager.save(4, args=ocp.args.Composite(train=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)))
  legacy.wait()
  assert not (legacy_dir / "checkpoints" / "4" / "params").exists()
  again, _ = legacy.restore(4, rs.setup.abstract_train)
  legacy.close()
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(again)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  shutil.copy(trained / "config.json", legacy_dir / "config.json")
  a, b = (load_run(str(w), [1, 1, 1, 1]) for w in (trained, legacy_dir))
  assert a.step == b.step == 4
  from flax import nnx
  for x, y in zip(jax.tree.leaves(nnx.state(a.model)), jax.tree.leaves(nnx.state(b.model))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
