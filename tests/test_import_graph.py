"""The import graph of wildactor_jax has no cycle (imports inside functions count: a lazy import
hides a circle, it does not remove it)."""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "wildactor_jax"


def module_names() -> dict[str, pathlib.Path]:
  out = {}
  for path in sorted((ROOT / PACKAGE).rglob("*.py")):
    parts = path.relative_to(ROOT).with_suffix("").parts
    out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return out


def imports_of(name: str, path: pathlib.Path, modules: dict) -> set[str]:
  """The package modules that `name` imports, anywhere in its body. `from pkg import mod` is an
  edge to pkg.mod alone (Python runs pkg/__init__ first, but a child needing its parent package
  initialised is not a circle of ideas); `from pkg import attr` is an edge to pkg."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    else:
      continue
    for target in targets:
      while target and target not in modules:  # `import a.b.c` names the deepest module
        target = target.rpartition(".")[0]
      if target and target != name:
        found.add(target)
  return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state: dict[str, int] = {}  # 1 on the current path, 2 done
  path: list[str] = []

  def visit(node):
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    state[node] = 2
    path.pop()
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_finder_sees_a_planted_cycle():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_resolves_relative_and_lazy_imports():
  modules = module_names()
  graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
  assert "wildactor_jax.input.schema" in graph["wildactor_jax.input.random_source"]
  assert "wildactor_jax.input.records_source" in graph["wildactor_jax.input.batches"]


def test_wildactor_jax_has_no_import_cycle():
  modules = module_names()
  graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
  cycle = find_cycle(graph)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)
