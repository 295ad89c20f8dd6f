"""Test setup: CPU only with 8 host devices (meshes), float32 matmuls at full precision."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
  os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def require_test_extra(name: str):
  """Imports `name`, a package of setup.py's `test` extra (the numerical oracles), failing the
  importing test module when it is missing: `make test` installs the extra, so a missing oracle
  is a broken set-up, never a reason to skip parity checks quietly."""
  import importlib
  try:
    return importlib.import_module(name)
  except ImportError as e:
    raise ImportError(f"{name} is missing ({e}): the parity tests need setup.py's `test` extra "
                      "(pip install -e '.[test]'; make test installs it)") from None


# Subprocess runs of the CLIs (train, distill, the fault-injection and multi-process tests)
# compile the same tiny programs again and again: they share one persistent compilation cache
# for the session. Set after `import jax`, so this process keeps its own in-memory caches only.
_COMPILE_CACHE = None


def pytest_configure(config):
  global _COMPILE_CACHE
  import tempfile
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _COMPILE_CACHE = tempfile.mkdtemp(prefix="wildactor_test_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _COMPILE_CACHE


def pytest_unconfigure(config):
  if _COMPILE_CACHE is not None:
    import shutil
    shutil.rmtree(_COMPILE_CACHE, ignore_errors=True)


# `make test` hands whole files to two workers (`--dist loadfile --no-loadscope-reorder`) in the
# order collected. The files below take longest on the 2-core VM (one worker's seconds, measured
# with `--durations=0`; slowest first): they are handed out first, so that no long file starts
# last and runs alone while the other worker idles. Files not named keep their usual order after
# them; a renamed file only loses its place in the queue.
SLOW_FILES_FIRST = (
    "test_distill.py",             # 192 s (2026-12-07)
    "test_train.py",               # 167
    "test_eval_protocol.py",       # 145
    "test_run_safety.py",          # 110
    "test_wildactor.py",           # 91
    "test_reference_guidance.py",  # 90
    "test_multihost.py",           # 87
    "test_sharded_attention.py",   # 81
    "test_remote_storage.py",      # 60
    "test_generate.py",            # 59
    "test_bench.py",               # 52
    "test_vae.py",                 # 46
)


def pytest_collection_modifyitems(session, config, items):
  rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
  # A stable sort: the tests of a file keep their order (and their module fixtures, one build).
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
