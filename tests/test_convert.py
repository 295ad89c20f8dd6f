"""The converter CLI and the checkpoint format: bad input is a one-line error with exit 2, nothing
half-written, user files untouched; the models never import the converters."""
import ast
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _imported_modules(path):
  tree = ast.parse(open(path).read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module
      yield from (f"{node.module}.{a.name}" for a in node.names)


def test_models_never_import_the_converters():
  folder = os.path.join(REPO, "wildactor_jax", "models")
  offenders = sorted(
      f"{name}: {module}" for name in os.listdir(folder) if name.endswith(".py")
      for module in _imported_modules(os.path.join(folder, name))
      if module == "wildactor_jax.convert" or module.startswith("wildactor_jax.convert."))
  assert not offenders


# ----------------------------------------------------------------------------- bad input

def _convert(capsys, src, out, *extra):
  from wildactor_jax.convert.__main__ import main
  rc = main(["--src", str(src), "--out", str(out), "--dtype", "float32", *extra])
  return rc, capsys.readouterr().err.strip()


def _refused(capsys, src, out, *words):
  """Exit 2 with a one-line error holding every word in `words`."""
  rc, err = _convert(capsys, src, out)
  assert rc == 2, err
  assert err.startswith("error: ") and "\n" not in err, err
  for w in words:
    assert w in err, (w, err)
  return err


def _snapshot(folder):
  """Every file under `folder` (hidden ones too) with its bytes."""
  out = {}
  for root, _, files in os.walk(folder):
    for f in files:
      full = os.path.join(root, f)
      out[os.path.relpath(full, folder)] = open(full, "rb").read()
  return out


@pytest.fixture(scope="module")
def wan_src(tmp_path_factory):
  """A tiny diffusers-layout Wan transformer: (folder, {key: numpy tensor})."""
  from safetensors.numpy import load_file
  from wildactor_jax.testing import wan_oracle
  folder = str(tmp_path_factory.mktemp("wan") / "src")
  wan_oracle.save_diffusers(wan_oracle.make_wan(num_layers=2), folder)
  return folder, load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))


def _edited(wan_src, dst, **replace):
  """A copy of the source with some tensors replaced (config.json kept)."""
  from safetensors.numpy import save_file
  folder, tensors = wan_src
  os.makedirs(dst)
  save_file(dict(tensors, **replace), os.path.join(dst, "diffusion_pytorch_model.safetensors"))
  with open(os.path.join(folder, "config.json")) as fh, open(os.path.join(dst, "config.json"),
                                                             "w") as out:
    out.write(fh.read())
  return dst


def test_refuses_a_folder_of_user_files(wan_src, tmp_path, capsys):
  out = tmp_path / "mine"
  (out / "sub").mkdir(parents=True)
  (out / "notes.txt").write_text("my notes")
  (out / "sub" / "data.bin").write_bytes(b"\x00\x01")
  before = _snapshot(tmp_path)
  _refused(capsys, wan_src[0], out, str(out), "not a converted checkpoint")
  assert _snapshot(tmp_path) == before  # untouched, and nothing staged beside it


def test_refuses_a_checkpoint_holding_a_user_file(wan_src, tmp_path, capsys):
  out = tmp_path / "ckpt"
  assert _convert(capsys, wan_src[0], out)[0] == 0
  (out / "notes.txt").write_text("my notes")  # a user's file in it: no longer ours to replace
  before = _snapshot(tmp_path)
  _refused(capsys, wan_src[0], out, "not a converted checkpoint")
  assert _snapshot(tmp_path) == before


def test_replaces_an_old_checkpoint_by_rename(wan_src, tmp_path, capsys):
  from wildactor_jax.models.checkpoint_io import read_params
  out = tmp_path / "ckpt"
  assert _convert(capsys, wan_src[0], out)[0] == 0
  old = read_params(str(out))
  scaled = {"proj_out.bias": wan_src[1]["proj_out.bias"] * 3 + 1}
  assert _convert(capsys, _edited(wan_src, str(tmp_path / "src2"), **scaled), out)[0] == 0
  new = read_params(str(out))
  np.testing.assert_allclose(new["proj_out"]["bias"], old["proj_out"]["bias"] * 3 + 1, rtol=1e-6)
  assert sorted(os.listdir(tmp_path)) == ["ckpt", "src2"]  # nothing staged or set aside is left
  assert oct(os.stat(out).st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask():
  mask = os.umask(0)
  os.umask(mask)
  return mask


def test_a_crash_while_writing_keeps_the_old_checkpoint(wan_src, tmp_path, capsys, monkeypatch):
  from wildactor_jax.models import checkpoint_io
  out = tmp_path / "ckpt"
  assert _convert(capsys, wan_src[0], out)[0] == 0
  before = _snapshot(tmp_path)

  def crash(*args):
    raise KeyboardInterrupt  # e.g. the user pressing Ctrl-C while the params are written

  monkeypatch.setattr(checkpoint_io, "_save", crash)
  with pytest.raises(KeyboardInterrupt):
    _convert(capsys, wan_src[0], out)
  assert _snapshot(tmp_path) == before


def test_a_failed_publish_puts_the_old_checkpoint_back(wan_src, tmp_path, capsys, monkeypatch):
  from etils import epath
  out = tmp_path / "ckpt"
  assert _convert(capsys, wan_src[0], out)[0] == 0
  before = _snapshot(tmp_path)
  rename = epath.Path.rename

  def flaky(self, target):  # the old one renames aside, the new one then fails to move in
    if ".partial-" in os.fspath(self):
      raise OSError("disk went away")
    return rename(self, target)

  monkeypatch.setattr(type(epath.Path(os.fspath(out))), "rename", flaky)
  with pytest.raises(OSError, match="disk went away"):
    _convert(capsys, wan_src[0], out)
  assert _snapshot(tmp_path) == before


def test_empty_folder_is_used(wan_src, tmp_path, capsys):
  out = tmp_path / "empty"
  out.mkdir()
  assert _convert(capsys, wan_src[0], out)[0] == 0
  assert sorted(os.listdir(out)) == ["config.json", "params"]


def test_out_is_an_existing_file(wan_src, tmp_path, capsys):
  out = tmp_path / "weights.ckpt"
  out.write_bytes(b"precious")
  _refused(capsys, wan_src[0], out, str(out), "is an existing file")
  assert out.read_bytes() == b"precious" and sorted(os.listdir(tmp_path)) == ["weights.ckpt"]


def test_out_is_an_existing_file_exits_2_from_the_command_line(tmp_path):
  out = tmp_path / "f"
  out.write_text("x")
  proc = subprocess.run(
      [sys.executable, "-m", "wildactor_jax.convert", "--src", str(tmp_path), "--out", str(out)],
      capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
  assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
  assert "is an existing file" in proc.stderr and out.read_text() == "x"


@pytest.mark.parametrize("key,shape", [
    ("blocks.1.attn1.to_k.weight", (32, 30)),   # inside a layer
    ("proj_out.weight", (33, 32)),              # derives out_channels 8, implies (32, 32)
    ("blocks.0.scale_shift_table", (1, 5, 32)),
])
def test_tensor_shape_against_the_config(wan_src, tmp_path, capsys, key, shape):
  src = _edited(wan_src, str(tmp_path / "src"), **{key: np.zeros(shape, np.float32)})
  want = tuple(wan_src[1][key].shape)
  _refused(capsys, src, tmp_path / "out", f"tensor {key} has shape {shape}",
           f"implies {want}")
  assert sorted(os.listdir(tmp_path)) == ["src"]


def test_truncated_safetensors_file(wan_src, tmp_path, capsys):
  src = _edited(wan_src, str(tmp_path / "src"))
  f = os.path.join(src, "diffusion_pytorch_model.safetensors")
  os.truncate(f, os.path.getsize(f) - 100)  # cut in the data section, header intact
  _refused(capsys, src, tmp_path / "out", f, "truncated safetensors file")
  os.truncate(f, 5)  # cut inside the header length
  _refused(capsys, src, tmp_path / "out", f, "truncated safetensors file")
  assert sorted(os.listdir(tmp_path)) == ["src"]


def test_bucket_source_needs_a_mount(tmp_path, capsys):
  _refused(capsys, "gs://bucket/wan", tmp_path / "out", "gs://bucket/wan", "mount the bucket")
  assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------- model defaults

@pytest.mark.parametrize("backbone", ["wan22_ti2v_5b", "wan21_t2v_1p3b", "tiny"])
def test_model_defaults_have_one_source(backbone):
  """config_lib.model_config is ModelConfig's defaults plus the backbone preset, field for field:
  a default changed in one place cannot drift from the other."""
  import dataclasses
  from wildactor_jax import config_lib
  from wildactor_jax.models.config import ModelConfig
  cfg = config_lib.model_config(backbone).to_dict()
  assert cfg.pop("name") == backbone
  preset = config_lib.BACKBONES[backbone]
  for f in dataclasses.fields(ModelConfig):
    assert cfg.pop(f.name) == preset.get(f.name, f.default), f.name
  assert not cfg  # no field that ModelConfig does not have
  built = ModelConfig.from_mapping(config_lib.model_config(backbone))
  assert built == dataclasses.replace(ModelConfig(), **{k: v for k, v in preset.items()})
