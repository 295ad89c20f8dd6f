"""Multi-host training, simulated on one machine: the trainer as 2 processes x 4 CPU devices on
localhost (jax.distributed, gloo collectives, per-process Grain shards, one Orbax checkpoint
written by both), started with the JAX_* variables that launch/gpu_multinode.sh gives its
processes. One process is SIGKILLed after a checkpoint, the other must stop by itself; both
restart, resume, and must end where one process with 8 devices ends.

Not bit for bit: the losses agree to within 2e-6 (relative), the train state to within 1e-5 of
each leaf's largest value, and the LoRA weights to within 1e-4 of what the steps after the
restart changed (global norms). Why: the fsdp all-reduce of the gradients adds 8 partial sums.
On 8 devices of one process XLA:CPU adds them in device order; across 2 processes it runs
through gloo's all-reduce, which adds them in another order (with jax 0.10.2, an 8-way sum of
random float32 vectors matches the device-order sum bit for bit on one process and differs in
about half of its entries on two). float32 addition is not associative, so gradients differ in
their last bits from step 1 on, and Adam (m / sqrt(v)) magnifies that for near-zero gradient
entries. Observed: 2e-7 on the losses, 2e-6 of a leaf's scale, 2e-6 of the change since the
restart. The data and the random draws are identical (test_process_shares_make_the_global_batch
checks the batches exactly); even the first loss, a mean over the batch sharded across both
processes, is summed through gloo and may differ in its last bits.
"""
from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np

from test_input_pipeline import config as records_config, write_shards
from test_train import ROOT, load_config, restore_train_state
from wildactor_jax.input import random_source, records_source
from wildactor_jax.sharding import create_mesh
from wildactor_jax.train_lib import metrics as metrics_lib

STEPS, EVERY, KILL_AFTER = 8, 2, 4  # checkpoints at 2, 4, 6, 8; process 1 dies after 4
TRAIN_ARGS = ["--config", "configs/wildactor_wan22_5b.py:tiny", f"--config.train.steps={STEPS}",
              "--config.train.warmup_steps=2", f"--config.checkpoint.every={EVERY}",
              "--config.train.log_every=4", "--config.train.eval_every=0",
              "--config.checkpoint.keep=10",
              # One block instead of two: compilation is most of this test's time on 2 cores.
              "--config.model.num_layers=1"]
LOSS_RTOL, STATE_TOL, MOVED_FRACTION = 2e-6, 1e-5, 1e-4  # see the module docstring


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launcher_env(workdir) -> list[dict[str, str]]:
  """Each process's JAX_* variables, read from launch/gpu_multinode.sh's dry run for two
  "hosts" on this machine (its process lines: 'cd DIR && exec env K=V ... PYTHON -m ...')."""
  r = subprocess.run(
      ["bash", "launch/gpu_multinode.sh", "--hosts", "localhost,127.0.0.1", "--coordinator",
       "127.0.0.1", "--port", str(_free_port()), "--python", sys.executable, "--dry-run",
       "--workdir", str(workdir), *TRAIN_ARGS], cwd=ROOT, capture_output=True, text=True,
      timeout=30)
  assert r.returncode == 0, r.stderr
  envs = []
  for line in r.stdout.splitlines():
    if line.startswith("# process "):
      words = shlex.split(line.split(": ", 1)[1])
      assert words[words.index("env") + 4:][:3] == [sys.executable, "-m", "wildactor_jax.train"]
      envs.append(dict(w.split("=", 1) for w in words if w.startswith("JAX_")))
  assert [e["JAX_PROCESS_ID"] for e in envs] == ["0", "1"], r.stdout
  assert all(e["JAX_NUM_PROCESSES"] == "2" and e["JAX_COORDINATOR_ADDRESS"].startswith("127.0.0.1:")
             for e in envs), envs
  return envs


class Processes:
  """Trainer processes with their logs in files (a full pipe would block a trainer); kill_all()
  SIGKILLs whatever still runs."""

  def __init__(self, tmp_path, cache):
    self.tmp_path, self.cache, self.procs = tmp_path, cache, []

  def start(self, name: str, argv: list[str], devices: int, extra_env: dict | None = None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_COMPILATION_CACHE_DIR=str(self.cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **(extra_env or {}))
    log = open(self.tmp_path / f"{name}.log", "w")
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    proc.log_path, proc.log = log.name, log
    self.procs.append(proc)
    return proc

  def start_job(self, name: str, workdir, faults: list[str]) -> list:
    """The 2-process job: tests/faults.py is the trainer's main with an optionally slowed source."""
    return [self.start(f"{name}-p{i}", ["tests/faults.py", *faults, "--workdir", str(workdir),
                                        *TRAIN_ARGS], 4, env)
            for i, env in enumerate(launcher_env(workdir))]

  @staticmethod
  def wait(proc, timeout: float) -> int:
    try:
      return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      raise AssertionError(f"{proc.log_path}: still running after {timeout} s (hung?):\n"
                           + tail(proc)) from None

  def kill_all(self) -> None:
    for proc in self.procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)
      proc.log.close()


def tail(proc, n: int = 3000) -> str:
  with open(proc.log_path) as f:
    return f.read()[-n:]


def wait_for_checkpoint(workdir, step: int, procs, timeout: float) -> None:
  """Until <workdir>/checkpoints/<step> is finalised (Orbax renames its temporary directory)."""
  final = workdir / "checkpoints" / str(step)
  deadline = time.time() + timeout
  while not final.is_dir():
    for proc in procs:
      assert proc.poll() is None, f"{proc.log_path} ended early:\n{tail(proc)}"
    assert time.time() < deadline, f"no checkpoint {step} after {timeout} s"
    time.sleep(0.1)


def _assert_shares_stack_to_global(one, shares, batches: int) -> None:
  for _ in range(batches):
    whole, parts = next(one), [next(it) for it in shares]
    for key, value in whole.items():
      np.testing.assert_array_equal(value, np.concatenate([p[key] for p in parts]), err_msg=key)


def test_process_shares_make_the_global_batch(tmp_path):
  """Per-process Grain shards: the two processes' batches, stacked, are exactly the global
  batches of one process (same examples, same random draws, same order), for both sources."""
  config = load_config("wildactor_wan22_5b", "tiny")
  config.data.random_examples = 20  # not a multiple of the batch: epochs wrap inside a batch
  _assert_shares_stack_to_global(random_source.create_dataset(config),
                                 [random_source.create_dataset(config, "train", p, 2)
                                  for p in range(2)], 6)
  write_shards(tmp_path, 11, shards=2)  # shuffled records, references drawn per example
  cfg = records_config(tmp_path, global_batch_size=4)
  _assert_shares_stack_to_global(records_source.create_dataset(cfg),
                                 [records_source.create_dataset(cfg, "train", p, 2)
                                  for p in range(2)], 6)


def test_multihost_kill_restart_matches_one_process(tmp_path):
  job, ref = tmp_path / "multihost", tmp_path / "one_process"
  procs = Processes(tmp_path, tmp_path / "xla_cache")
  try:
    # The 1-process reference runs alongside (the real CLI, 8 devices).
    reference = procs.start("reference", ["-m", "wildactor_jax.train", "--workdir", str(ref),
                                          *TRAIN_ARGS], 8)
    # From step KILL_AFTER + 1 each batch takes 6 s: the kill lands in that wait, after the
    # step-KILL_AFTER checkpoint is finalised and before step KILL_AFTER + 1.
    first = procs.start_job("killed", job, [f"--slow_from_step={KILL_AFTER + 1}", "--delay_s=6"])
    wait_for_checkpoint(job, KILL_AFTER, first, timeout=420)
    time.sleep(1.5)  # let process 1 pass the save's closing barrier
    first[1].send_signal(signal.SIGKILL)
    assert procs.wait(first[1], 30) == -signal.SIGKILL
    # The survivor's next collective fails ("Connection closed by peer"); it must exit with an
    # error, not wait for its dead peer (jax would, at its shutdown barrier, then abort).
    assert procs.wait(first[0], 120) == 1, tail(first[0])
    log0 = tail(first[0], 20000)
    assert "Connection closed by peer" in log0 and "error: process 0 of 2 failed" in log0, log0
    assert [e["step"] for e in metrics_lib.read_loss_log(job)] == list(range(1, KILL_AFTER + 1))
    steps = sorted(int(p.name) for p in (job / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == KILL_AFTER, steps
    # One Grain iterator state per process, in the one checkpoint.
    data = job / "checkpoints" / str(KILL_AFTER) / "data"
    assert (data / "process_0-of-2.json").is_file() and (data / "process_1-of-2.json").is_file()

    second = procs.start_job("restarted", job, [])
    for proc in second:
      assert procs.wait(proc, 420) == 0, tail(proc)
      assert f"resuming from {job / 'checkpoints'}/{KILL_AFTER}" in tail(proc, 10**7)
    assert procs.wait(reference, 420) == 0, tail(reference)
  finally:
    procs.kill_all()

  got, want = metrics_lib.read_loss_log(job), metrics_lib.read_loss_log(ref)
  assert [e["step"] for e in got] == [e["step"] for e in want] == list(range(1, STEPS + 1))
  np.testing.assert_allclose([e["loss"] for e in got], [e["loss"] for e in want], rtol=LOSS_RTOL)
  # Step 1's loss is itself a mean over the batch sharded across both processes, so it too is
  # summed through gloo: equal to the last bits only within the same tolerance.

  config = load_config("wildactor_wan22_5b", "tiny")
  config.model.num_layers = 1
  mesh = create_mesh(config.mesh.shape, config.mesh.axes)
  a, b = (restore_train_state(str(w), config, mesh, STEPS) for w in (job, ref))
  before = restore_train_state(str(ref), config, mesh, KILL_AFTER)
  assert int(a["step"]) == STEPS
  diff = moved = 0.0  # squared norms over the LoRA weights
  for (path, x), y, y0 in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b),
                              jax.tree.leaves(before)):
    x, y, y0 = np.asarray(x), np.asarray(y), np.asarray(y0)
    name = jax.tree_util.keystr(path)
    if x.dtype.kind != "f":
      np.testing.assert_array_equal(x, y, err_msg=name)  # step, Adam counts, RNG key
      continue
    np.testing.assert_allclose(x, y, rtol=0, atol=STATE_TOL * np.abs(y).max(), err_msg=name)
    if name.startswith("['lora']"):
      diff += float(np.sum((x.astype(np.float64) - y) ** 2))
      moved += float(np.sum((y.astype(np.float64) - y0) ** 2))
  # Far inside what the 4 steps after the restart changed: a step lost, repeated or fed other
  # data would be of that order.
  assert np.sqrt(diff) < MOVED_FRACTION * np.sqrt(moved), (np.sqrt(diff), np.sqrt(moved))
