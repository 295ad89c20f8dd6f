"""launch/*.sh: the printed commands of --dry-run, argument errors, and (with stub gcloud/ssh on
PATH) the real-run paths: slice deletion after a failed step, per-process logs and exit status.

No network, gcloud, xpk, srun or ssh is needed: dry runs only print, and the real-run tests put
small stub executables first on PATH.
"""
from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"
CONFIG = "configs/wildactor_wan22_5b.py:v5p-64"
# Overrides that need quoting: a space and a glob, parentheses and a comma.
ODD_OVERRIDES = ["--config.data.records=gs://bucket/my data/*.array_record",
                 "--config.train.eval_timesteps=(0.25, 0.5)"]
# What the TPU launchers pass on: the records' bucket is read through its gcsfuse mount.
MOUNTED_OVERRIDES = ["--config.data.records=/tmp/gcsfuse/bucket/my data/*.array_record",
                     ODD_OVERRIDES[1]]


def _run(script: str, *args: str, env: dict | None = None, cwd: Path | None = None):
  return subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True,
                        timeout=30, env=env, cwd=cwd)


def _commands(stdout: str) -> list[list[str]]:
  """The '+ ...' lines of a dry run, split the way a shell would."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _find(cmds: list[list[str]], *prefix: str) -> list[list[str]]:
  return [c for c in cmds if c[:len(prefix)] == list(prefix)]


def _flag(cmd: list[str], name: str) -> str:
  values = [a.split("=", 1)[1] for a in cmd if a.startswith(name + "=")]
  assert len(values) == 1, (name, cmd)
  return values[0]


def _train_argv(shell: str) -> list[str]:
  """The training argv inside a remote shell string ('cd D && [exec] env K=V ... python -m ...')."""
  words = shlex.split(shell)
  return words[words.index("-m") - 1:]


# --- tpu_vm.sh ---

TPU_ARGS = ["--name", "wa-v5p", "--zone", "us-east5-a", "--accelerator-type", "v5p-64",
            "--config", CONFIG, "--workdir", "gs://my-bucket/runs/wa1",
            "--config.train.steps=10", *ODD_OVERRIDES]


def test_tpu_vm_dry_run_commands():
  res = _run("tpu_vm.sh", *TPU_ARGS, "--spot", "--dry-run", "--", "--alsologtostderr")
  assert res.returncode == 0, res.stderr
  cmds = _commands(res.stdout)
  create, = _find(cmds, "gcloud", "compute", "tpus", "tpu-vm", "create")
  assert create[5] == "wa-v5p" and "--zone=us-east5-a" in create and "--spot" in create
  assert _flag(create, "--accelerator-type") == "v5p-64"
  assert _flag(create, "--version") == "v2-alpha-tpuv5"
  scp, = _find(cmds, "gcloud", "compute", "tpus", "tpu-vm", "scp")
  assert "--worker=all" in scp and "wa-v5p:wildactor_jax.tgz" in scp
  install, mount, train = _find(cmds, "gcloud", "compute", "tpus", "tpu-vm", "ssh")
  assert _mounts(_flag(mount, "--command")) == {"bucket": "/tmp/gcsfuse/bucket"}
  for ssh in (install, mount, train):
    assert ssh[5] == "wa-v5p" and "--worker=all" in ssh and "--zone=us-east5-a" in ssh
  assert "pip install -q -e '.[tpu]'" in _flag(install, "--command")
  assert _flag(train, "--output-directory").startswith("logs/tpu_vm-wa-v5p-")
  remote = _flag(train, "--command")
  assert "JAX_COORDINATOR_ADDRESS=WORKER0_IP:8482" in shlex.split(remote)
  assert _train_argv(remote) == [
      ".venv/bin/python", "-m", "wildactor_jax.train", "--config", CONFIG,
      "--workdir", "gs://my-bucket/runs/wa1", "--config.train.steps=10", *MOUNTED_OVERRIDES,
      "--alsologtostderr"]
  # Worker 0's IP is read before training; the slice is deleted last.
  describe, = _find(cmds, "gcloud", "compute", "tpus", "tpu-vm", "describe")
  assert cmds.index(describe) < cmds.index(train)
  assert cmds[-1] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "wa-v5p", "--zone=us-east5-a",
                      "--quiet"]


def test_tpu_vm_queued_resource_and_keep():
  res = _run("tpu_vm.sh", *TPU_ARGS, "--queued", "--project", "my-proj", "--dry-run")
  assert res.returncode == 0, res.stderr
  cmds = _commands(res.stdout)
  create, = _find(cmds, "gcloud", "compute", "tpus", "queued-resources", "create")
  assert create[5] == "wa-v5p-qr" and _flag(create, "--node-id") == "wa-v5p"
  assert _flag(create, "--accelerator-type") == "v5p-64"
  assert _flag(create, "--runtime-version") == "v2-alpha-tpuv5"
  assert "--project=my-proj" in create and "--spot" not in create
  assert _find(cmds, "gcloud", "compute", "tpus", "queued-resources", "describe")
  assert cmds[-1][:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "wa-v5p-qr"]
  assert "--force" in cmds[-1] and "--quiet" in cmds[-1]

  res = _run("tpu_vm.sh", *TPU_ARGS, "--keep", "--dry-run")
  assert res.returncode == 0, res.stderr
  assert not _find(_commands(res.stdout), "gcloud", "compute", "tpus", "tpu-vm", "delete")
  res = _run("tpu_vm.sh", *TPU_ARGS, "--existing", "--skip-install", "--dry-run")
  cmds = _commands(res.stdout)
  assert res.returncode == 0 and not _find(cmds, "gcloud", "compute", "tpus", "tpu-vm", "create")
  assert not _find(cmds, "gcloud", "compute", "tpus", "tpu-vm", "delete")
  # No install: the bucket mount and the training.
  assert len(_find(cmds, "gcloud", "compute", "tpus", "tpu-vm", "ssh")) == 2


def _mounts(shell: str) -> dict[str, str]:
  """{bucket: mount point} of the gcsfuse commands in a worker's shell string."""
  words = shlex.split(shell.replace(";", " ; "))
  return {words[i + 4]: words[i + 5] for i, w in enumerate(words) if w == "gcsfuse"
          and words[i + 1:i + 4] == ["--implicit-dirs", "-o", "ro"]}


def test_tpu_vm_mounts_buckets_before_training(tmp_path):
  """--mount-bucket (gs:// or not, repeated) and the records' bucket: each mounted once, read
  only, on all workers, after the install and before training; the mount command installs
  gcsfuse where it is missing. Without a gs:// records path or --mount-bucket, no mount step."""
  res = _run("tpu_vm.sh", *TPU_ARGS, "--mount-bucket", "gs://ckpt-bucket", "--mount-bucket=bucket",
             "--mount-bucket", "ckpt-bucket/", "--dry-run")
  assert res.returncode == 0, res.stderr
  install, mount, train = _find(_commands(res.stdout), "gcloud", "compute", "tpus", "tpu-vm", "ssh")
  shell = _flag(mount, "--command")
  assert _mounts(shell) == {"ckpt-bucket": "/tmp/gcsfuse/ckpt-bucket", "bucket": "/tmp/gcsfuse/bucket"}
  assert shell.startswith("set -eo pipefail;") and "command -v gcsfuse" in shell
  assert "apt-get install -y -q gcsfuse" in shell and "--worker=all" in mount
  plain = [a for a in TPU_ARGS if not a.startswith("--config.data.records")]
  res = _run("tpu_vm.sh", *plain, "--dry-run")
  assert res.returncode == 0 and len(_find(_commands(res.stdout), "gcloud", "compute", "tpus",
                                           "tpu-vm", "ssh")) == 2
  # The mount command runs as given: a stub gcsfuse/mountpoint on PATH, the mount root in tmp.
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "gcsfuse.log"
  _stub(bin_dir, "gcsfuse", f'echo "$*" >> {shlex.quote(str(log))}\n')
  _stub(bin_dir, "mountpoint", "exit 1\n")
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  local = shell.replace("/tmp/gcsfuse", str(tmp_path / "mnt"))
  done = subprocess.run(["bash", "-c", local], env=env, capture_output=True, text=True, timeout=30)
  assert done.returncode == 0, done.stderr
  assert log.read_text().splitlines() == [
      f"--implicit-dirs -o ro ckpt-bucket {tmp_path}/mnt/ckpt-bucket",
      f"--implicit-dirs -o ro bucket {tmp_path}/mnt/bucket"]
  assert (tmp_path / "mnt" / "bucket").is_dir()


def _stub(bin_dir: Path, name: str, body: str) -> None:
  path = bin_dir / name
  path.write_text("#!/usr/bin/env bash\n" + body)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_tpu_vm_deletes_slice_when_training_fails(tmp_path):
  """Real-run path with a stub gcloud that fails the training ssh: the slice is still deleted."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  calls = tmp_path / "calls.txt"
  _stub(bin_dir, "gcloud", f"""echo "$*" >> {shlex.quote(str(calls))}
case "$*" in
  *"tpu-vm describe"*) echo 10.0.0.2 ;;
  *"tpu-vm ssh"*) exit 7 ;;
esac
""")
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  plain = [a for a in TPU_ARGS if not a.startswith("--config.data.records")]  # no mount step
  res = _run("tpu_vm.sh", *plain, "--skip-install", "--log-dir", str(tmp_path / "logs"), env=env)
  assert res.returncode == 7, (res.stdout, res.stderr)
  lines = calls.read_text().splitlines()
  assert lines[0].startswith("compute tpus tpu-vm create wa-v5p")
  assert "JAX_COORDINATOR_ADDRESS=10.0.0.2:8482" in lines[2]
  assert lines[-1] == "compute tpus tpu-vm delete wa-v5p --zone=us-east5-a --quiet"


# --- xpk.sh ---

def test_xpk_dry_run_commands():
  res = _run("xpk.sh", "--cluster", "my-v5p", "--workload", "wa-run1", "--tpu-type", "v5p-64",
             "--num-slices", "2", "--docker-image", "gcr.io/p/wildactor:latest", "--zone", "us-east5-a",
             "--config", CONFIG, "--workdir", "gs://my-bucket/runs/wa1", *ODD_OVERRIDES,
             "--env", "LIBTPU_INIT_ARGS=--xla_tpu_enable_async_collective_fusion=true", "--dry-run")
  assert res.returncode == 0, res.stderr
  create, = _find(_commands(res.stdout), "xpk", "workload", "create")
  assert _flag(create, "--cluster") == "my-v5p" and _flag(create, "--workload") == "wa-run1"
  assert _flag(create, "--tpu-type") == "v5p-64" and _flag(create, "--num-slices") == "2"
  assert _flag(create, "--docker-image") == "gcr.io/p/wildactor:latest"
  assert _flag(create, "--zone") == "us-east5-a"
  mount, train = _flag(create, "--command").split(" && env ")
  assert _mounts(mount) == {"bucket": "/tmp/gcsfuse/bucket"}
  command = shlex.split("env " + train)
  assert command[:2] == ["env", "LIBTPU_INIT_ARGS=--xla_tpu_enable_async_collective_fusion=true"]
  assert command[2:] == ["python", "-m", "wildactor_jax.train", "--config", CONFIG,
                         "--workdir", "gs://my-bucket/runs/wa1", *MOUNTED_OVERRIDES]


def test_xpk_script_dir_and_delete():
  res = _run("xpk.sh", "--cluster", "c1", "--workload", "w1", "--tpu-type", "v6e-64",
             "--script-dir", str(REPO), "--config", "configs/tiny.py", "--workdir", "gs://b1/r",
             "--dry-run")
  assert res.returncode == 0, res.stderr
  create, = _find(_commands(res.stdout), "xpk", "workload", "create")
  assert _flag(create, "--base-docker-image") and _flag(create, "--script-dir") == str(REPO)
  assert _flag(create, "--num-slices") == "1"
  assert _flag(create, "--command").startswith("pip install -q -e '.[tpu]' && python -m wildactor_jax.train")
  res = _run("xpk.sh", "--delete", "--cluster", "c1", "--workload", "w1", "--dry-run")
  assert res.returncode == 0 and _commands(res.stdout) == [
      ["xpk", "workload", "delete", "--workload=w1", "--cluster=c1"]]


# --- gpu_multinode.sh ---

GPU_TRAIN = ["--config", "configs/wildactor_wan22_5b.py:8xh100", "--workdir", "/shared/runs/wa1",
             "--config.train.steps=1000", *ODD_OVERRIDES]


def test_gpu_ssh_two_hosts_process_ids():
  res = _run("gpu_multinode.sh", "--hosts", "gpu-a,me@gpu-b", "--port", "9999", "--remote-dir",
             "/opt/wa", "--env", "NCCL_DEBUG=WARN", *GPU_TRAIN, "--dry-run")
  assert res.returncode == 0, res.stderr
  # Each line ends with its log redirection: ssh ... HOST 'REMOTE' > LOG 2>&1 &
  lines = _find(_commands(res.stdout), "ssh")
  for i, (line, host) in enumerate(zip(lines, ["gpu-a", "gpu-b"])):
    _, log, *rest = line[line.index(">"):]
    assert log.startswith("logs/gpu_multinode-") and log.endswith(f"/process-{i}-{host}.log")
    assert rest == ["2>&1", "&"]
  sshs = [c[:c.index(">")] for c in lines]
  assert [c[-2] for c in sshs] == ["gpu-a", "me@gpu-b"]
  for pid, cmd in enumerate(sshs):
    words = shlex.split(cmd[-1])
    assert words[:3] == ["cd", "/opt/wa", "&&"]
    assert "JAX_COORDINATOR_ADDRESS=gpu-a:9999" in words
    assert "JAX_NUM_PROCESSES=2" in words and f"JAX_PROCESS_ID={pid}" in words
    assert "NCCL_DEBUG=WARN" in words
    assert _train_argv(cmd[-1]) == [".venv/bin/python", "-m", "wildactor_jax.train", *GPU_TRAIN]


def test_gpu_slurm():
  res = _run("gpu_multinode.sh", "--slurm", "--nodes", "2", "--gpus-per-node", "4",
             "--srun-arg=--partition=gpu", *GPU_TRAIN, "--dry-run")
  assert res.returncode == 0, res.stderr
  srun, = _find(_commands(res.stdout), "srun")
  assert "--nodes=2" in srun and "--ntasks-per-node=1" in srun and "--partition=gpu" in srun
  assert "JAX_LOCAL_DEVICE_IDS=0,1,2,3" in srun and "JAX_COORDINATOR_PORT=8476" in srun
  per_task = srun[srun.index("-c") + 1]
  assert 'JAX_PROCESS_ID="$SLURM_PROCID"' in per_task and 'JAX_NUM_PROCESSES="$SLURM_NTASKS"' in per_task
  assert srun[srun.index("-m") - 1:] == [".venv/bin/python", "-m", "wildactor_jax.train", *GPU_TRAIN]


def test_gpu_ssh_real_run_logs_and_failure(tmp_path):
  """Stub ssh prints the remote command it was given; host "bad" fails with status 3."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _stub(bin_dir, "ssh", """for last; do :; done
for a; do case "$a" in bad) echo "boom"; exit 3 ;; esac; done
echo "REMOTE: $last"
""")
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  logs = tmp_path / "logs"
  res = _run("gpu_multinode.sh", "--hosts", "h0,h1", "--log-dir", str(logs), *GPU_TRAIN, env=env)
  assert res.returncode == 0, res.stderr
  assert "JAX_PROCESS_ID=1" in (logs / "process-1-h1.log").read_text()
  res = _run("gpu_multinode.sh", "--hosts", "h0,bad", "--log-dir", str(logs), *GPU_TRAIN, env=env)
  assert res.returncode == 1 and "process 1 (bad) exited with 3" in res.stderr
  assert (logs / "process-1-bad.log").read_text().strip() == "boom"


# --- argument errors: non-zero exit and one line on stderr ---

@pytest.mark.parametrize("script,args,needle", [
    ("tpu_vm.sh", [a for a in TPU_ARGS if a != "--zone" and a != "us-east5-a"], "--zone is required"),
    ("tpu_vm.sh", [*TPU_ARGS[:5], "v99-8", *TPU_ARGS[6:]], "--accelerator-type v99-8"),
    ("tpu_vm.sh", [*TPU_ARGS[:8], "--workdir", "/tmp/run"], "must be a gs:// path"),
    ("tpu_vm.sh", [*TPU_ARGS, "--frobnicate"], "unknown argument: --frobnicate"),
    ("tpu_vm.sh", [*TPU_ARGS, "--config.train.steps"], "needs the form --config.KEY=VALUE"),
    ("tpu_vm.sh", ["--name", "Bad_Name", *TPU_ARGS[2:]], "--name Bad_Name"),
    ("tpu_vm.sh", [*TPU_ARGS[:6], "--config", "configs/nope.py:x", *TPU_ARGS[8:]], "not found"),
    ("tpu_vm.sh", [*TPU_ARGS, "--zone"], "--zone needs a value"),
    ("xpk.sh", ["--cluster", "c", "--workload", "w", "--tpu-type", "v5p-64", "--config", CONFIG,
                "--workdir", "gs://b1/r"], "give --docker-image"),
    ("xpk.sh", ["--cluster", "c", "--workload", "w", "--tpu-type", "v5p-64", "--docker-image", "i",
                "--num-slices", "0", "--config", CONFIG, "--workdir", "gs://b1/r"], "--num-slices 0"),
    ("xpk.sh", ["--workload", "w"], "--cluster is required"),
    ("gpu_multinode.sh", GPU_TRAIN, "give --hosts"),
    ("gpu_multinode.sh", ["--hosts", "a,a", *GPU_TRAIN], "appears twice"),
    ("gpu_multinode.sh", ["--hosts", "a,b", "--port", "99999", *GPU_TRAIN], "--port 99999"),
    ("gpu_multinode.sh", ["--slurm", *GPU_TRAIN], "--slurm needs --nodes"),
    ("gpu_multinode.sh", ["--hosts", "a,b", "--workdir", "/w"], "--config is required"),
    ("gpu_multinode.sh", ["--hosts", "a,b", "--mount-bucket", "b1", *GPU_TRAIN], "--mount-bucket"),
    ("tpu_vm.sh", [*TPU_ARGS, "--mount-bucket", "Bad_Bucket"], "bucket 'Bad_Bucket'"),
])
def test_bad_arguments(script, args, needle):
  env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  res = _run(script, *args, "--dry-run", env=env)
  assert res.returncode != 0
  assert res.stdout == ""
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and needle in lines[0], res.stderr
  assert lines[0].startswith(f"{script}: error: ")


@pytest.mark.parametrize("script", ["tpu_vm.sh", "xpk.sh", "gpu_multinode.sh"])
def test_help_and_strict_mode(script):
  res = _run(script, "--help")
  assert res.returncode == 0 and res.stdout.startswith("Usage: ")
  assert "set -euo pipefail" in (LAUNCH / script).read_text()
