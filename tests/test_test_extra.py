"""The parity suites check our ports against torch, diffusers and transformers (setup.py's
`test` extra, which `make test` installs). Without the extra they must fail, not skip: a skipped
parity suite reads as a green run."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARITY = ("tests/test_pipeline_parity.py", "tests/test_umt5.py", "tests/test_vae.py")


def test_parity_suites_fail_when_the_test_extra_is_missing(tmp_path):
  blocked = tmp_path / "blocked"  # importing any of these raises ImportError, as if not installed
  for name in ("torch", "diffusers", "transformers"):
    (blocked / name).mkdir(parents=True)
    (blocked / name / "__init__.py").write_text("raise ImportError('not installed (test)')\n")
  path = [str(blocked), ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
  r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p",
                      "no:cacheprovider", *PARITY], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=300)
  out = r.stdout + r.stderr
  assert r.returncode not in (0, 5), out[-2000:]  # 5: nothing collected (all skipped)
  assert "skipped" not in out.splitlines()[-1], out[-2000:]
  for module in PARITY:
    assert f"ERROR {module}" in out or f"ERROR collecting {module}" in out, out[-3000:]
  assert out.count("the parity tests need setup.py's `test` extra") >= len(PARITY)
