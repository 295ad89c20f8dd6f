"""The converter CLI and the checkpoint format: bad input is a one-line error with exit 2, nothing
half-written, user files untouched; the models never import the converters."""
import ast
import os

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
