"""`python -m wildactor_jax.bench` on the tiny config: every field present and sane."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ("backend", "device_kind", "num_devices", "jax", "dtype", "mesh", "step_s", "step_s_std",
          "timed_steps", "compile_s", "tokens_per_s_per_device", "model_flops",
          "tflops_per_device", "peak_tflops", "mfu", "peak_bytes_in_use")


def bench(*args):
  r = subprocess.run([sys.executable, "-m", "wildactor_jax.bench", "--config",
                      "configs/wildactor_wan22_5b.py:tiny", "--steps", "2", *args], cwd=ROOT,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
  assert len(lines) == 1, r.stdout
  return json.loads(lines[0])


@pytest.mark.parametrize("mode", ["train", "generate"])
def test_bench_fields(mode):
  extra = ["--vs", "diffusers"] if mode == "generate" else []
  out = bench("--mode", mode, *extra)
  for key in COMMON:
    assert key in out, key
  assert out["mode"] == mode and out["backend"] == "cpu" and out["num_devices"] == 8
  assert out["mesh"] == {"data": 1, "fsdp": 8, "context": 1, "tensor": 1}
  assert out["timed_steps"] == 2 and 0 < out["step_s"] < 60 and out["compile_s"] > 0
  assert out["model_flops"] > 0 and out["tflops_per_device"] > 0
  assert out["peak_tflops"] is None and out["mfu"] is None  # no peak is known for a CPU
  assert out["tokens_per_s_per_device"] > 0 and out["video_tokens_per_step"] > 0
  if mode == "train":
    assert out["reference_tokens_per_step"] > 0 and out["batch"] == 8
  else:
    assert out["cfg_batch"] == 2 and out["reference_tokens_cached"] > 0
    assert out["ratio_ours_over_diffusers"] > 0 and out["max_rel_err"] < 1e-4
