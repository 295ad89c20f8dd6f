"""fs: globs of every shape a user may type (the gs:// forms are in test_remote_storage.py)."""
import os

from wildactor_jax import fs


def test_glob_without_a_slash_matches_in_the_current_folder(tmp_path, monkeypatch):
  for name in ("b.json", "a.json", "c.txt"):
    (tmp_path / name).write_text("{}")
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "d.json").write_text("{}")
  monkeypatch.chdir(tmp_path)
  want = [str(tmp_path / "a.json"), str(tmp_path / "b.json")]
  assert fs.glob("*.json") == want
  assert fs.glob("[ab].json") == want
  assert fs.glob("*/d.json") == [str(tmp_path / "sub" / "d.json")]
  assert fs.glob("sub/*.json") == [str(tmp_path / "sub" / "d.json")]
  assert fs.glob(str(tmp_path / "*.txt")) == [str(tmp_path / "c.txt")]
  assert fs.glob("*.npz") == [] and fs.glob("a.json") == ["a.json"]
  assert fs.glob(os.path.join("missing", "*.json")) == []
