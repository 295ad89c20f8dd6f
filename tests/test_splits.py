"""The identity-disjoint train/test rule: one copy, in the package (wildactor_jax.input.splits),
used by the dataset builder and the evaluation; the installed package never imports the
repository's data/ folder (outside the repository root there is none), and `evaluate` names
the splits it accepts."""
from __future__ import annotations

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def imports_data(path: pathlib.Path) -> bool:
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
             [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
    if any(n == "data" or n.startswith("data.") for n in names):
      return True
  return False


def test_the_package_does_not_import_the_repositorys_data_folder():
  found = {str(p.relative_to(ROOT)) for p in sorted((ROOT / "wildactor_jax").rglob("*.py"))
           if imports_data(p)}
  assert not found, sorted(found)


def test_held_out_actors_without_the_data_folder(monkeypatch):
  """`evaluate --raw` run outside the repository root failed with "No module named 'data'"."""
  from wildactor_jax.eval import raw
  for name in [m for m in sys.modules if m == "data" or m.startswith("data.")]:
    monkeypatch.delitem(sys.modules, name)
  monkeypatch.setitem(sys.modules, "data", None)  # `import data...` now fails, as outside
  actors = [f"actor_{i:03d}" for i in range(40)]
  held = raw.held_out(actors, 0.25)
  assert 0 < len(held) < len(actors) and held == sorted(held)
  monkeypatch.delitem(sys.modules, "data")
  from data.actor18m import validate
  from wildactor_jax.input import splits
  assert validate.held_out_actors is splits.held_out_actors  # one copy of the rule
  assert sorted(validate.held_out_actors(actors, 0.25)) == held


def test_evaluate_refuses_an_unknown_split(tmp_path, capsys):
  from wildactor_jax import evaluate
  (tmp_path / "raw").mkdir()
  (tmp_path / "raw" / "manifest.jsonl").write_text("")
  out = tmp_path / "eval.json"
  assert evaluate.main(["--raw", str(tmp_path / "raw"), "--generated", str(tmp_path / "gen"),
                        "--split", "bogus", "--out", str(out)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["error: --split bogus: expected one of train, test (the dataset's "
                 "identity-disjoint splits)"], err
  assert not out.exists()
