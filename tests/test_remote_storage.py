"""gs:// from end to end, against a real GCS emulator on loopback (gcp-storage-emulator, in this
process): train (with a resume), generate and encode read and write a bucket, and nothing lands in
a local folder named `gs:`.

How each layer reaches the emulator (no request leaves 127.0.0.1):
  * etils.epath (our `fs`, Orbax's own files, Grain's iterator state): epath picks TensorFlow's
    GCS client when TensorFlow is installed, and that client's endpoint is compiled in
    (https://www.googleapis.com), so EPATH_USE_TF=false selects epath's fsspec backend, gcsfs,
    which honours STORAGE_EMULATOR_HOST; its credential search finds nothing (an empty gcloud
    config, NO_GCE_CHECK, the metadata server address on a closed loopback port) and falls
    back to anonymous access;
  * Orbax's arrays (tensorstore's `gcs` kvstore): TENSORSTORE_GCS_HTTP_URL, with
    GOOGLE_AUTH_TOKEN_FOR_TESTING so that no metadata server or credential file is consulted.
Nothing is mocked: every byte goes through the emulator's HTTP API. An audit hook records any
Python-level connection or name lookup that is not loopback, and the fixture fails on one
(tensorstore's C++ HTTP client is outside its view; its endpoint and token come from the
environment above).
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
from http import HTTPStatus

import numpy as np
import pytest
from PIL import Image

# Not imported here: gcsfs reads its settings (GCSFS_*) when first imported, from the fixture.
# Both come with the `test` extra, so a missing one fails the test rather than skipping it.
assert importlib.util.find_spec("gcp_storage_emulator") and importlib.util.find_spec("gcsfs"), (
    "the remote-storage tests need the `test` extra (gcp-storage-emulator, gcsfs)")

from wildactor_jax import fs, generate  # noqa: E402
from wildactor_jax.config_lib import load_config_file  # noqa: E402
from wildactor_jax.models import tokenizer, umt5  # noqa: E402
from wildactor_jax.models.config import ModelConfig  # noqa: E402
from wildactor_jax.models.loading import backbone_hash, create_model, save_backbone  # noqa: E402
from wildactor_jax.train import train_and_evaluate  # noqa: E402
from wildactor_jax.train_lib import metrics as metrics_lib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "wildactor-test"
PROMPT = "a person in a red shirt waves"


# Python-level network use while the bucket fixture is active: any connection or name lookup
# that is not loopback is recorded (an audit hook cannot be removed, so it checks a switch).
_OUTSIDE: dict = {"watching": False, "seen": []}
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _audit(event, args):
  if not _OUTSIDE["watching"]:
    return
  if event == "socket.connect" and isinstance(args[1], tuple) and args[1][0] not in _LOOPBACK:
    _OUTSIDE["seen"].append(args[1])
  elif event == "socket.getaddrinfo" and args[0] not in _LOOPBACK + (None,):
    _OUTSIDE["seen"].append(args[0])


sys.addaudithook(_audit)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _move_route():
  """The emulator's missing objects.move (POST .../o/SRC/moveTo/o/DST), which gcsfs tries first
  for every rename; without it each rename waits out gcsfs's retries of a 501 before gcsfs falls
  back to copy + delete. Done here the same way: copy, then delete."""
  from gcp_storage_emulator.handlers import objects

  def move(request, response, storage, *args, **kwargs):
    params = request.params
    try:
      obj = objects._copy(request.base_url, storage, params["bucket_name"], params["object_id"],
                          params["bucket_name"], params["dest_object_id"])
    except objects.NotFound:
      response.status = HTTPStatus.NOT_FOUND
      return
    objects._delete(storage, params["bucket_name"], params["object_id"])
    response.json(obj)

  return (r"^/storage/v1/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)/moveTo/o/"
          r"(?P<dest_object_id>.*[^/]+)$", {"POST": move})


def _local_gs_folders(*roots) -> list[str]:
  """Every folder named `gs:` (what os.path makes of gs://...) below the given roots."""
  found = []
  for root in roots:
    for where, dirs, _ in os.walk(root):
      found += [os.path.join(where, d) for d in dirs if d == "gs:"]
      dirs[:] = [d for d in dirs if not d.startswith(".")]
  return found


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
  """gs://wildactor-test on an in-memory emulator at 127.0.0.1:<free port>; the environment
  points epath (gcsfs) and tensorstore at it for this module only."""
  from etils.epath import gpath
  from gcp_storage_emulator import server as emulator
  port = _free_port()
  server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
  server.start()
  url = f"http://127.0.0.1:{port}"
  home = tmp_path_factory.mktemp("home")
  env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
         "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "EPATH_USE_TF": "false",
         "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
         "NO_GCE_CHECK": "true", "CLOUDSDK_CONFIG": str(home), "GCE_METADATA_HOST": "127.0.0.1:9",
         "GCE_METADATA_IP": "127.0.0.1:9", "GCE_METADATA_ROOT": "127.0.0.1:9"}
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(emulator, "HANDLERS", (_move_route(),) + emulator.HANDLERS)
    for k, v in env.items():
      mp.setenv(k, v)
    mp.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    gpath._is_tf_installed.cache_clear()  # cached at the first epath use: re-read EPATH_USE_TF
    tmp_before = set(os.listdir(tempfile.gettempdir()))
    mp.chdir(tmp_path_factory.mktemp("cwd"))  # a relative "gs:/..." folder would appear here
    _OUTSIDE.update(watching=True, seen=[])
    try:
      yield f"gs://{BUCKET}"
    finally:
      _OUTSIDE["watching"] = False
      cwd = os.getcwd()
      new_tmp = [os.path.join(tempfile.gettempdir(), n)
                 for n in set(os.listdir(tempfile.gettempdir())) - tmp_before]
      gpath._is_tf_installed.cache_clear()
      import gcsfs
      gcsfs.GCSFileSystem.clear_instance_cache()
      server.stop()
  assert not _local_gs_folders(cwd, ROOT, *[p for p in new_tmp if os.path.isdir(p)])
  assert "gs:" not in os.listdir(tempfile.gettempdir())
  assert not _OUTSIDE["seen"], f"network use outside loopback: {_OUTSIDE['seen'][:5]}"


def listing(uri: str) -> list[str]:
  """The objects under `uri` in the bucket, relative to it."""
  return fs.walk_files(uri)


@pytest.fixture(scope="module")
def world(bucket, tmp_path_factory):
  """A tiny config whose backbone and text encoder live in the bucket; a reference image there."""
  tmp = tmp_path_factory.mktemp("world")
  # The tokenizer lives in the bucket too; the text encoder's checkpoint gets a copy of it.
  tok = tokenizer.build_demo_tokenizer(PROMPT.split(), f"{bucket}/tok")
  # Written straight to the bucket: checkpoint_io's remote path (extra files, params, config).
  umt5.save_random(f"{bucket}/umt5", umt5.UMT5Config(vocab_size=16, d_model=32, d_kv=8,
                                                     num_heads=2, d_ff=64, num_layers=1),
                   tokenizer_path=f"{bucket}/tok")
  config = load_config_file(os.path.join(ROOT, "configs", "wildactor_wan22_5b.py:tiny"))
  config.vae.update(kind="pixel", spatial_factor=4)
  # No tokenizer_path: the one published beside the encoder's weights in the bucket is used.
  config.text_encoder.update(path=f"{bucket}/umt5", tokenizer_path="", max_length=16)
  config.data.update(height=32, width=32, frames=5)
  config.model.num_layers = 1  # storage is under test, not depth: keeps compiles short
  config.mesh.shape = (1, 8, 1, 1)
  config.train.update(steps=4, warmup_steps=1, log_every=2, eval_every=0, profile_steps=0)
  config.checkpoint.update(every=2, keep=5)
  config.sample.steps = 2
  # A converted backbone, saved locally and copied object by object into the bucket.
  backbone = str(tmp / "backbone")
  save_backbone(create_model(ModelConfig.from_mapping(config.model), seed=3), backbone)
  for rel in fs.walk_files(backbone):
    fs.put_file(os.path.join(backbone, rel), f"{bucket}/backbone/{rel}")
  config.backbone_path = f"{bucket}/backbone"
  face = tmp / "face.png"
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 24, 3), np.uint8)).save(face)
  fs.put_file(str(face), f"{bucket}/refs/face.png")
  assert tok == f"{bucket}/tok/tokenizer.json"
  return config, backbone


def test_remote_storage_tokenizer_is_read_from_the_bucket(bucket, world, tmp_path):
  """The text encoder's tokenizer, found beside its weights in the bucket or named there (a file
  or its folder), tokenises as a local copy of the same file does."""
  local = tokenizer.Tokenizer.from_path(tokenizer.build_demo_tokenizer(
      PROMPT.split(), str(tmp_path / "tokenizer.json")))
  want = local([PROMPT, "a person waves"], 16)
  assert listing(f"{bucket}/umt5").count("tokenizer.json") == 1
  beside = umt5.load_text_encoder(f"{bucket}/umt5", text_len=16)
  assert beside.tokenizer is not None and beside.tokenizer.source == f"{bucket}/umt5/tokenizer.json"
  for source in (f"{bucket}/tok", f"{bucket}/tok/tokenizer.json", f"{bucket}/umt5"):
    got = tokenizer.Tokenizer.from_path(source)([PROMPT, "a person waves"], 16)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
  with pytest.raises(FileNotFoundError, match="no such tokenizer file"):
    tokenizer.Tokenizer.from_path(f"{bucket}/tok/missing.json")


def test_remote_storage_backbone_hash_is_the_local_one(bucket, world):
  """A backbone copied to a bucket is the same backbone: hashed through fs, not os.walk (which
  sees nothing under gs:// and would give every remote backbone one hash)."""
  _, local = world
  assert backbone_hash(f"{bucket}/backbone") == backbone_hash(local)
  assert backbone_hash(f"{bucket}/backbone") != backbone_hash(f"{bucket}/umt5")


def test_remote_storage_train_resumes_in_the_bucket(bucket, world, tmp_path):
  config, _ = world
  workdir = f"{bucket}/runs/r1"
  config.train.steps = 2
  train_and_evaluate(config, workdir)
  config.train.steps = 4  # a longer schedule: a config change, resumed as allowed
  train_and_evaluate(config, workdir, allow_config_change=True)  # resumes from step 2
  files = listing(workdir)
  for step in (2, 4):
    assert any(f.startswith(f"checkpoints/{step}/params/") for f in files), files
    assert any(f.startswith(f"checkpoints/{step}/data") for f in files), files
  for name in ("config.json", "hparams.json", "metrics.jsonl", metrics_lib.LOSS_LOG):
    assert name in files
  assert len([f for f in files if f.startswith("events.out.tfevents.")]) == 2  # one per start
  assert "trainer.lock" not in files and not [f for f in files if ".partial-" in f]
  remote = metrics_lib.read_loss_log(workdir)
  assert [e["step"] for e in remote] == [1, 2, 3, 4]
  meta = json.loads(fs.read_text(f"{workdir}/checkpoints/4/meta/metadata"))
  assert meta["backbone"] == {"kind": "checkpoint", "path": f"{bucket}/backbone",
                              "hash": backbone_hash(f"{bucket}/backbone")}
  # The same four steps in a local workdir in one go: storage changes nothing, to the bit.
  train_and_evaluate(config, str(tmp_path / "local"))
  assert metrics_lib.read_loss_log(str(tmp_path / "local")) == remote


def test_remote_storage_generate_reads_and_writes_the_bucket(bucket, world, capsys):
  workdir = f"{bucket}/runs/r1"
  out = f"{bucket}/videos/wave.mp4"
  assert generate.main(["--workdir", workdir, "--prompt", PROMPT, "--face",
                        f"{bucket}/refs/face.png", "--out", out, "--gif"]) == 0
  line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert line["checkpoint_step"] == 4
  assert (line["video"], line["contact_sheet"], line["gif"]) == (
      out, f"{bucket}/videos/wave.png", f"{bucket}/videos/wave.gif")
  assert listing(f"{bucket}/videos") == ["wave.gif", "wave.mp4", "wave.png"]
  assert fs.read_bytes(out)[4:8] == b"ftyp"


@pytest.fixture(scope="module")
def encoded(bucket, world, tmp_path_factory):
  """Raw records in the bucket, encoded into the bucket and (the same records) locally:
  (encode.run's summaries remote and local, the local folder of raw and encoded records)."""
  from data import build_actor18m, synthetic_actors
  from wildactor_jax import encode
  config, _ = world
  tmp = tmp_path_factory.mktemp("encoded")
  synthetic_actors.generate(str(tmp / "media"), 2, 1, seed=5, size=32, frames=5, workers=1)
  build_actor18m.build(str(tmp / "media" / "manifest.jsonl"), str(tmp / "raw"),
                       test_fraction=0.0, num_shards=2)
  for rel in fs.walk_files(tmp / "raw"):
    fs.put_file(str(tmp / "raw" / rel), f"{bucket}/raw/{rel}")
  remote = encode.run(config, f"{bucket}/raw", f"{bucket}/encoded", batch_size=2, progress=False)
  local = encode.run(config, str(tmp / "raw"), str(tmp / "encoded"), batch_size=2,
                     progress=False)
  return remote, local, tmp


def test_remote_storage_encode_bucket_to_bucket(bucket, world, encoded):
  """Raw records in the bucket -> encoded shards in the bucket, byte-identical to a local run;
  the trainer then refuses those gs:// shards with the one line that says how to mount them."""
  from wildactor_jax import encode
  from wildactor_jax.input import records_source
  config, _ = world
  remote, local, tmp_path = encoded
  assert remote == local and remote["written"] == 2 and remote["shards_done"] == 2
  names = sorted(os.listdir(tmp_path / "encoded"))
  assert listing(f"{bucket}/encoded") == names == [
      "encode_info.json", "null_text.npz", "train-00000-of-00002.array_record",
      "train-00001-of-00002.array_record"]
  for name in names:
    assert fs.read_bytes(f"{bucket}/encoded/{name}") == (tmp_path / "encoded" / name).read_bytes()
  # Rerun: every shard is found in the bucket and skipped.
  again = encode.run(config, f"{bucket}/raw", f"{bucket}/encoded", batch_size=2, progress=False)
  assert (again["shards_done"], again["shards_reused"]) == (0, 2)
  with pytest.raises(fs.FsError, match=r"^config.data.records gs://.*gcsfuse.*--mount-bucket"):
    records_source.split_files(f"{bucket}/encoded", "train")


def test_remote_storage_profile_reaches_the_bucket_through_fs(bucket):
  """The trainer's profile window for a gs:// workdir: traced into a local folder (never a gs://
  logdir handed to the profiler's own GCS client), then copied into the workdir through fs."""
  import time
  import jax.numpy as jnp
  from clu import metric_writers
  from wildactor_jax.train_lib import writers as writers_lib
  workdir = f"{bucket}/runs/profiled"
  writer = writers_lib.Writers([metric_writers.LoggingWriter()])
  hook = writers_lib.progress_hooks(workdir, 10, writer, profile_steps=1, first_profile=1)[-1]
  assert not fs.is_remote(hook._logdir)
  hook(1)  # starts the trace
  jnp.ones((8, 8)).sum().block_until_ready()
  hook(2, time.monotonic() + 10.0)  # one step and the minimum duration later: stops it
  traces = [f for f in listing(workdir) if f.startswith("plugins/profile/")]
  assert any(f.endswith(".xplane.pb") for f in traces), listing(workdir)
  assert not os.listdir(hook._logdir)  # the local copy is gone once in the bucket


def test_remote_storage_training_reads_the_bucket_through_its_mount(bucket, world, encoded,
                                                                     tmp_path):
  """The documented way to train on records in a bucket: the TPU launcher turns a gs:// records
  override into the bucket's gcsfuse mount path and mounts the bucket there; the trainer's input
  pipeline then reads the same batches as from a local copy. gcsfuse itself is a stub here that
  presents the bucket's objects at the mount point (copied through fs from the emulator)."""
  import copy
  from wildactor_jax.input import batches
  from test_launch import TPU_ARGS, _commands, _find, _flag, _run, _stub, _train_argv
  config, _ = world
  _, _, tmp = encoded
  args = [a for a in TPU_ARGS if not a.startswith("--config.data.records")]
  res = _run("tpu_vm.sh", *args, f"--config.data.records={bucket}/encoded", "--dry-run")
  assert res.returncode == 0, res.stderr
  _, mount, train = _find(_commands(res.stdout), "gcloud", "compute", "tpus", "tpu-vm", "ssh")
  records = [a.split("=", 1)[1] for a in _train_argv(_flag(train, "--command"))
             if a.startswith("--config.data.records=")]
  assert records == [f"/tmp/gcsfuse/{BUCKET}/encoded"]
  root = tmp_path / "gcsfuse"
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _stub(bin_dir, "mountpoint", "exit 1\n")
  _stub(bin_dir, "gcsfuse", f"""PYTHONPATH={ROOT} exec {sys.executable} -c '
import os, sys
from wildactor_jax import fs
bucket, point = sys.argv[-2:]
for rel in fs.walk_files("gs://" + bucket):
  os.makedirs(os.path.dirname(os.path.join(point, rel)), exist_ok=True)
  fs.copy_to_local(f"gs://{{bucket}}/{{rel}}", os.path.join(point, rel))
' "$@"
""")
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  shell = _flag(mount, "--command").replace("/tmp/gcsfuse", str(root))
  done = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]

  def first_batch(records):
    cfg = copy.deepcopy(config)
    cfg.data.update(source="records", records=records)
    return next(batches.create_source(cfg, "train"))

  mounted = first_batch(records[0].replace("/tmp/gcsfuse", str(root)))
  local = first_batch(str(tmp / "encoded"))
  assert sorted(mounted) == sorted(local)
  for key in local:
    np.testing.assert_array_equal(mounted[key], local[key], err_msg=key)
