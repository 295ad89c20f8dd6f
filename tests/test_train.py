"""The training program: one step, sharding of the 5B state, exact resume after an external SIGKILL,
checkpoint restore across meshes, the non-finite guard, and the AOT TPU compile (subprocess).

Runs on 8 host CPU devices (conftest.py). The tiny config keeps every compile to seconds.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractMesh

import faults
from wildactor_jax.config_lib import load_config_file
from wildactor_jax.input import batches
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import create_model
from wildactor_jax.sharding import create_mesh
from wildactor_jax.train import NonFiniteError, train_and_evaluate
from wildactor_jax.train_lib import checkpoint as ckpt_lib
from wildactor_jax.input import batches, random_source, schema
from wildactor_jax.train_lib import metrics as metrics_lib
from wildactor_jax.train_lib import state as state_lib, step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg=None):
  return load_config_file(os.path.join(ROOT, "configs", f"{name}.py") + (f":{arg}" if arg else ""))


def tiny_config(steps: int = 4, every: int = 2, mesh=(1, -1, 1, 1)):
  config = load_config("wildactor_wan22_5b", "tiny")
  config.mesh.shape = mesh
  config.train.steps, config.train.warmup_steps = steps, 1
  config.train.log_every, config.train.eval_every = steps, 0
  config.checkpoint.every = every
  return config


def shards(sharding) -> int:
  used = [a for e in sharding.spec if e for a in ((e,) if isinstance(e, str) else e)]
  return math.prod(sharding.mesh.shape[a] for a in used)


def restore_train_state(workdir: str, config, mesh, step: int | None = None) -> dict:
  rules = tuple(config.mesh.rules)
  tx, _ = state_lib.build_optimizer(config.train)
  setup = state_lib.make_setup(ModelConfig.from_mapping(config.model), tx, mesh, rules)
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=10)
  try:
    state, _ = checkpointer.restore(step or checkpointer.latest_step(), setup.abstract_train)
  finally:
    checkpointer.close()
  return state


def test_one_step_is_finite_and_updates_only_lora():
  config = tiny_config()
  config.train.warmup_steps = 0  # a non-zero learning rate at step 0
  mesh = create_mesh(config.mesh.shape, config.mesh.axes)
  rules = tuple(config.mesh.rules)
  cfg = ModelConfig.from_mapping(config.model)
  tx, schedule = state_lib.build_optimizer(config.train)
  setup = state_lib.make_setup(cfg, tx, mesh, rules)
  graphdef, frozen, lora = state_lib.split_model(create_model(cfg, seed=0, mesh=mesh, rules=rules))
  params = lambda lora_state: jax.device_get(nnx.to_pure_dict(
      nnx.state(nnx.merge(graphdef, frozen, lora_state), nnx.Param)))
  before = params(lora)
  state = state_lib.init_train_state(lora, tx, setup, seed=0)
  batch_abs = batches.abstract_batch(config, mesh, rules)
  train_step = step_lib.jit_train_step(
      step_lib.make_train_step(setup, tx, schedule, config.flow.shift, mesh, rules),
      setup, batch_abs, mesh, rules)
  batch = next(random_source.create_dataset(config))
  assert {k: batch[k].shape for k in batch_abs} == {k: v.shape for k, v in batch_abs.items()}
  state, metrics = train_step(frozen, state, batches.to_global(batch, mesh, rules))
  metrics = jax.device_get(metrics)
  assert metrics["finite"] and np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
  assert int(state["step"]) == 1
  after = params(state["lora"])
  lora_paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(
      nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, frozen, lora), nnx.LoRAParam)))}
  changed = {jax.tree_util.keystr(p) for (p, a), b in zip(
      jax.tree_util.tree_leaves_with_path(before), jax.tree.leaves(after))
      if not np.array_equal(a, b)}
  assert changed and changed <= lora_paths, changed - lora_paths
  assert any("up" in p for p in changed)  # the zero-initialised half moved


def test_5b_state_is_sharded_under_the_v5p_preset():
  """Abstract only: the preset's (1, 32, 1, 1) mesh as an AbstractMesh, no devices needed."""
  config = load_config("wildactor_wan22_5b", "v5p-64")
  mesh = AbstractMesh(tuple(config.mesh.shape), tuple(config.mesh.axes))
  tx, _ = state_lib.build_optimizer(config.train)
  setup = state_lib.make_setup(ModelConfig.from_mapping(config.model), tx, mesh,
                               tuple(config.mesh.rules))
  checked = 0
  for tree in (setup.abstract_frozen, setup.abstract_train):
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
      if math.prod(leaf.shape) * leaf.dtype.itemsize > 2**20:
        checked += 1
        assert shards(leaf.sharding) > 1, f"{jax.tree_util.keystr(path)} {leaf.shape} replicated"
        for dim, entry in zip(leaf.shape, leaf.sharding.spec):
          ways = shards(jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(entry)))
          assert dim % ways == 0, (jax.tree_util.keystr(path), leaf.shape, leaf.sharding.spec)
  assert checked > 20
  lora = jax.tree.leaves(setup.abstract_train["lora"])
  assert all(leaf.dtype == np.float32 for leaf in lora)  # float32 master weights


@pytest.mark.parametrize("spec", ["wildactor_wan22_5b.py", "wildactor_wan22_5b.py:tiny",
                                  "ablation_no_aipa.py", "ablation_no_irope.py",
                                  "ablation_uniform_sampling.py", "demo_tiny.py",
                                  "demo_tiny.py:backbone", "bench_train_5b_random.py"])
def test_training_configs_are_complete(spec):
  name, _, arg = spec.partition(":")
  config = load_config(name[:-3], arg or None)
  assert config.train.steps > 0 and config.checkpoint.every > 0
  assert config.train.warmup_steps < config.train.steps
  ModelConfig.from_mapping(config.model)
  schema.example_shapes(config)


def _run_cli(workdir, *overrides, cache=None, faults: list[str] | None = None, wait=True):
  """The trainer CLI (through tests/faults.py's slow data source when `faults` is given)."""
  entry = ["tests/faults.py", *faults] if faults is not None else ["-m", "wildactor_jax.train"]
  cmd = [sys.executable, *entry, "--config", "configs/wildactor_wan22_5b.py:tiny",
         "--workdir", str(workdir), "--config.train.steps=8", "--config.train.warmup_steps=2",
         "--config.checkpoint.every=2", "--config.train.log_every=4",
         "--config.train.eval_every=0", *overrides]
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  if not wait:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_resume_after_sigkill_is_bit_identical(tmp_path):
  """SIGKILL from outside, mid-run, with steps logged past the last checkpoint: checkpoints every
  4 steps and the source slows down at step 7, so once step 5 is logged the kill lands while
  batch 7 is being fetched (steps 5-6 done, only step 4 saved)."""
  cache = tmp_path / "xla_cache"
  killed, clean = tmp_path / "killed", tmp_path / "clean"
  every4 = "--config.checkpoint.every=4"
  proc = _run_cli(killed, every4, cache=cache, faults=["--slow_from_step=7", "--delay_s=3"],
                  wait=False)
  faults.wait_for_logged_step(proc, killed, 5)
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert proc.returncode == -9
  assert [e["step"] for e in metrics_lib.read_loss_log(killed)] == [1, 2, 3, 4, 5]
  checkpointer = ckpt_lib.Checkpointer(str(killed), keep=10)
  assert checkpointer.latest_step() in (None, 4)
  checkpointer.close()
  for workdir in (killed, clean):
    r = _run_cli(workdir, every4, cache=cache, faults=[])
    assert r.returncode == 0, r.stderr[-3000:]
    assert ("stale lock" in r.stderr) == (workdir == killed)  # the killed trainer's lock
  assert metrics_lib.read_loss_log(killed) == metrics_lib.read_loss_log(clean)
  assert [e["step"] for e in metrics_lib.read_loss_log(clean)] == list(range(1, 9))
  assert not (killed / "trainer.lock").exists()
  config = load_config("wildactor_wan22_5b", "tiny")
  mesh = create_mesh(config.mesh.shape, config.mesh.axes)
  a, b = (restore_train_state(str(w), config, mesh, 8) for w in (killed, clean))
  assert int(a["step"]) == 8
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigterm_saves_and_stops(tmp_path):
  workdir = tmp_path / "preempted"
  cmd = [sys.executable, "-m", "wildactor_jax.train", "--config", "configs/wildactor_wan22_5b.py:tiny",
         "--workdir", str(workdir), "--config.train.steps=100000", "--config.checkpoint.every=100000",
         "--config.train.eval_every=0"]
  proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  faults.wait_for_logged_step(proc, workdir, 3)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 0, stderr[-3000:]
  last = metrics_lib.read_loss_log(str(workdir))[-1]["step"]
  checkpointer = ckpt_lib.Checkpointer(str(workdir), keep=10)
  assert checkpointer.all_steps() == [last] and 3 <= last < 100000
  checkpointer.close()


@pytest.fixture(scope="module")
def poisoned_run(tmp_path_factory):
  """A run on a (4, 2) data x fsdp mesh whose step-3 batch is NaN: it must stop at step 3."""
  workdir = str(tmp_path_factory.mktemp("poisoned"))
  config = tiny_config(steps=4, every=2, mesh=(4, 2, 1, 1))
  source = faults.FaultySource(batches.create_source(config, "train"), nan_at_step=3)
  with pytest.raises(NonFiniteError, match="step 3.*not finite.*Last good checkpoint: step 2"):
    train_and_evaluate(config, workdir, train_source=source)
  return workdir, config


def test_nonfinite_guard_keeps_last_good_checkpoint(poisoned_run):
  workdir, config = poisoned_run
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=10)
  assert checkpointer.all_steps() == [2]
  checkpointer.close()
  assert [e["step"] for e in metrics_lib.read_loss_log(workdir)] == [1, 2]
  state = restore_train_state(workdir, config, create_mesh(config.mesh.shape, config.mesh.axes))
  assert int(state["step"]) == 2
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))


def test_checkpoint_restores_on_other_meshes(poisoned_run):
  workdir, config = poisoned_run  # written on the (4, 2) mesh
  meshes = [create_mesh((4, 2, 1, 1), config.mesh.axes), create_mesh((8, 1, 1, 1), config.mesh.axes),
            create_mesh((1, 1, 1, 1), config.mesh.axes, devices=jax.devices()[:1])]
  states = [restore_train_state(workdir, config, mesh) for mesh in meshes]
  for state, mesh in zip(states, meshes):
    up = state["lora"]["blocks"]["attn1"]["lora"]["q"]["up"][...]
    assert up.sharding.mesh.shape == mesh.shape
  for other in states[1:]:
    for x, y in zip(jax.tree.leaves(states[0]), jax.tree.leaves(other)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_aot_compile_tiny_for_v5e_4_with_splash_and_calibration(tmp_path):
  """The planner on the tiny config with the splash kernel (Mosaic calls compiled for 4 chips:
  one outside shard_map would not compile), after --calibrate on a made-up measured one-device
  step of the same config: every term, the three MFU figures and the calibration's arithmetic."""
  from wildactor_jax import flops
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
  out, measured = tmp_path / "aot.jsonl", tmp_path / "measured.jsonl"
  measured.write_text(json.dumps({  # a test input, not a result
      "measured": True, "num_devices": 1, "device_kind": "NVIDIA H100 80GB HBM3", "step_s": 1e-3,
      "attention": "cudnn", "command": "python -m wildactor_jax.bench --config "
      "configs/wildactor_wan22_5b.py:tiny --config.model.remat=full"}) + "\n")
  r = subprocess.run([sys.executable, "launch/aot_compile.py", "--config", "configs/wildactor_wan22_5b.py:tiny",
                      "--topology", "v5e-4", "--config.model.attention=splash", "--calibrate",
                      "--measured", f"{measured}:1", "--append", str(out)], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  printed = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
  assert [json.loads(l) for l in out.read_text().splitlines()] == printed  # --append: same rows
  cal, line = printed
  assert "#   collectives" in r.stdout and "MFU upper bound" in r.stdout and "# calibration" in r.stdout

  # Calibration: the roofline of the measured step at the H100's figures, over its time.
  assert cal["kind"] == "roofline calibration" and cal["source"] == "measured.jsonl:1"
  assert cal["compute_s"] == pytest.approx(cal["flops_per_device"] / 989e12)
  assert cal["memory_s"] == pytest.approx(cal["bytes_per_device"] / 3.35e12)
  assert cal["roofline_step_s"] == max(cal["compute_s"], cal["memory_s"])
  assert cal["roofline_over_measured"] == pytest.approx(cal["roofline_step_s"] / 1e-3)
  assert cal["kernel_flops_per_device"] > 0  # full remat: the kernel's forward runs twice

  assert line["devices"] == 4 and line["device_kind"].startswith("TPU v5")
  assert line["attention"] == "splash" and line["kernel_calls"] > 0
  assert line["fits"] is True and 0 < line["peak_bytes"] < line["hbm_bytes"]
  terms = [line["compute_s"], line["memory_s"], line["ici_s"]]
  assert line["step_time_s"] == max(terms) and line["serial_step_s"] == pytest.approx(sum(terms))
  # The HLO's dots (every loop weighted by its trip count) are the model's matmuls outside
  # attention, on every reference slot (the step computes the padded ones); attention is the
  # kernel's. Tiny: no remat.
  config = load_config_file("configs/wildactor_wan22_5b.py:tiny")
  cfg, video, slots, text = flops.step_tokens(config)
  every = flops.forward_flops(cfg, video, slots, text, batch=line["global_batch"])
  outside = every.train - 3 * every.self_attention - 2 * every.cross_attention
  assert 0.9 < line["hlo_flops_per_device"] * 4 / outside < 1.1
  assert line["kernel_flops_per_device"] * 4 > 3 * every.self_attention + 2 * every.cross_attention
  # Model FLOPs count valid references only: 2 of the 4 slots on average in this mix.
  assert line["references_per_example"] == pytest.approx(2.0) and line["reference_slots"] == 4
  assert line["flops_per_step"] == pytest.approx(flops.step_flops_for_config(config).train)
  assert line["flops_per_step"] < every.train
  # Three figures: the upper bound (max of the terms), no overlap (their sum), calibrated.
  per_peak = line["model_flops_per_device"] / 197e12
  assert line["mfu_upper_bound"] == pytest.approx(per_peak / line["step_time_s"])
  assert line["mfu_no_overlap"] == pytest.approx(per_peak / line["serial_step_s"])
  assert line["mfu_calibrated"] == pytest.approx(line["mfu_upper_bound"] * cal["roofline_over_measured"])
  assert line["calibration"]["source"] == "measured.jsonl:1" and "predicted_mfu" not in line
  assert line["collectives"]["all-gather"]["bytes"] > 0  # FSDP gathers the weights
  from importlib.metadata import version
  assert (line["jax"], line["libtpu"]) == (version("jax"), version("libtpu"))
  for key in ("argument_bytes", "temp_bytes", "output_bytes", "compile_s"):
    assert line[key] >= 0
