"""benchmarks/report.py on synthetic results: tables per kind, skipped rows noted, a valid PNG.

Every row written here is a made-up test input (backbone "test_backbone_*", config "test-config"),
not a result.
"""
from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "report.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load_report():
  spec = importlib.util.spec_from_file_location("bench_report", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _write(path: Path, rows: list) -> None:
  path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def _png_size(path: Path) -> tuple[int, int]:
  data = path.read_bytes()
  assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", "not a PNG"
  return struct.unpack(">II", data[16:24])


@pytest.fixture()
def results(tmp_path) -> Path:
  d = tmp_path / "results"
  d.mkdir()
  _write(d / "gpu_test.jsonl", [
      {"backbone": "test_backbone_a", "device": "NVIDIA H100 80GB HBM3", "mode": "generate_step_cfg_cached_refs",
       "resolution": "64x64", "frames": 9, "step_s": 0.5, "tokens_per_s": 1000.0,
       "tflops_per_device": 400.0, "peak_tflops": 989.0, "mfu": 0.4044, "measured": True},
      # No mfu, no peak: MFU from the H100 peak (989) -> 494.5 / 989 = 50.0%.
      {"backbone": "test_backbone_b", "device": "NVIDIA H100 80GB HBM3", "mode": "train_fwd_bwd_lora_grads",
       "step_s": 2.0, "tflops_per_device": 494.5, "measured": True},
      # Measured but nothing to compute MFU from: skipped with a note.
      {"backbone": "test_backbone_c", "device": "NVIDIA H100 80GB HBM3", "step_s": 1.0, "measured": True},
  ])
  _write(d / "aot_test.jsonl", [
      {"topology": "v5p-64", "num_slices": 2, "devices": 64, "device_kind": "TPU v5p", "model": "test-config",
       "global_batch": 64, "peak_bytes": 40 * 2**30, "hbm_bytes": 95 * 2**30, "fits": True,
       "flops_per_step": 64 * 200e12 * 3.0, "step_time_s": 3.0, "compute_s": 3.0, "memory_s": 1.0,
       "bound": "compute", "mfu_upper_bound": 0.41, "mfu_no_overlap": 0.3, "mfu_calibrated": 0.25,
       "attention": "splash", "remat": "full", "tokens_per_step": 1000},
      # An older row: `predicted_mfu` was the same upper bound.
      {"topology": "v6e-64", "devices": 64, "model": "test-config", "peak_bytes": 40 * 2**30,
       "hbm_bytes": 32 * 2**30, "fits": False, "flops_per_step": 1e15, "step_time_s": 1.0,
       "predicted_mfu": 0.25},
      # A projection without any MFU: skipped.
      {"topology": "v5p-8", "flops_per_step": 1e15, "model": "test-config"},
      {"kind": "roofline calibration", "source": "gpu_test.jsonl:1", "device_kind": "NVIDIA H100 80GB HBM3",
       "measured_step_s": 0.5, "roofline_step_s": 0.3, "serial_step_s": 0.4, "bound": "hbm",
       "roofline_over_measured": 0.6},
  ])
  _write(d / "trainer_test.jsonl", [
      {"kind": "measured", "device": "NVIDIA H100 80GB HBM3 (1 GPU)", "command":
       "python -m wildactor_jax.train --config configs/test_5b.py:1 --workdir W", "global_batch": 1,
       "remat": "full", "seconds_per_step": 0.8, "model_tflops_per_device": 400.0, "mfu": 0.4044,
       "note": "model FLOPs count every reference slot (r_max)"},
  ])
  _write(d / "micro_cpu.jsonl", [
      {"bench": "test_micro", "ratio": 1.05, "dim": 64, "device": "cpu", "date": "2000-01-01",
       "command": "python x.py"},
      "",
      "{not json",
      "[1, 2, 3]",
      {"something": "else"},
  ])
  (d / "notes.txt").write_text("not a results file\n")
  return d


def test_report_tables_and_png(results, tmp_path):
  out = tmp_path / "out" / "nested"  # created by the script
  res = subprocess.run([sys.executable, str(SCRIPT), "--results", str(results), "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
  assert res.returncode == 0, res.stderr
  assert "3 measured, 2 projection, 1 calibration, 1 cpu, 5 skipped" in res.stdout
  assert sorted(p.name for p in out.iterdir()) == ["REPORT.md", "throughput.png"]  # no temp files left
  md = (out / "REPORT.md").read_text()
  lines = md.splitlines()

  assert ("| test_backbone_a | 64x64, 9 f | generate, CFG, cached refs | H100 | 0.5 | 1,000 | 400 | 40.4% "
          "| valid | gpu_test.jsonl:1 |") in lines
  assert ("| test_backbone_b | — | train fwd+bwd, LoRA grads | H100 | 2 | — | 494 | 50.0% | valid "
          "| gpu_test.jsonl:2 |") in lines
  # The trainer's own rows (kind: measured, seconds_per_step) are measured runs too.
  assert ("| ? | — | trainer, batch 1, remat full, ? attention | H100 | 0.8 | — | 400 | 40.4% | every "
          "| trainer_test.jsonl:1 |") in lines
  # Projections: their own table, labelled as such; 64 x 200 TFLOP over 3 s on 64 devices = 200 TFLOP/s.
  assert "## AOT projections (not measurements)" in lines
  assert ("| test-config | attention splash, remat full | 2 x v5p-64 | 64 | 64 | 1,000 | 40.0 / 95 | yes | 3 "
          "| compute | 200 | 41.0% | 30.0% | 25.0% | aot_test.jsonl:1 |") in lines
  assert ("| test-config | — | v6e-64 | 64 | — | — | 40.0 / 32 | NO | 1 | — | 15.6 | 25.0% | — | — "
          "| aot_test.jsonl:2 |") in lines
  header = next(l for l in lines if l.startswith("| model / config"))
  assert "MFU upper bound" in header and "MFU calibrated (estimate)" in header
  assert "predicted" not in md.lower()  # an upper bound is never called a prediction
  assert "| gpu_test.jsonl:1 | H100 | 0.5 | 0.3 | HBM | 0.4 | 0.6 | aot_test.jsonl:4 |" in lines
  assert "| test_micro | ratio=1.05 | dim=64 | cpu | 2000-01-01 | micro_cpu.jsonl:1 |" in lines
  # Anchors from docs/method.md s.5.
  assert "| MaxDiffusion (JAX) Wan2.1-14B train, v5p-8 | 29.6% | 720p/81f, 36.0 s/step |" in lines
  assert "| Megatron-Bridge (PyTorch) Wan2.1-14B train, H100 | 32.9% | 325.8 TFLOP/s per GPU |" in lines
  assert any(l.startswith("| MaxText LLM training, v6e / TPU7x | 44-52% |") for l in lines)
  # Every bad line is noted, none crashes the report.
  skipped = md.split("## Skipped rows")[1]
  for where in ["gpu_test.jsonl:3", "aot_test.jsonl:3", "micro_cpu.jsonl:3", "micro_cpu.jsonl:4",
                "micro_cpu.jsonl:5"]:
    assert f"- {where}: " in skipped, where
  assert "notes.txt" not in md

  width, height = _png_size(out / "throughput.png")
  assert width > 300 and height > 200


def test_report_empty_and_bad_dirs(tmp_path, capsys):
  report = _load_report()
  empty = tmp_path / "empty"
  empty.mkdir()
  assert report.main(["--results", str(empty)]) == 0
  md = (empty / "REPORT.md").read_text()
  for text in ["No measured device runs.", "No AOT projections.", "No CPU micro-benchmarks.",
               "No calibration rows"]:
    assert text in md
  assert _png_size(empty / "throughput.png")[0] > 0
  with pytest.raises(SystemExit) as exc:
    report.main(["--results", str(tmp_path / "missing")])
  assert exc.value.code == 2
  assert "not a directory" in capsys.readouterr().err


def test_classify_kinds():
  report = _load_report()
  assert report.classify({"predicted_mfu": 0.3, "topology": "v5p-64"}) == "projection"
  assert report.classify({"mfu_upper_bound": 0.3, "topology": "v5p-64"}) == "projection"
  assert report.classify({"kind": "roofline calibration", "topology": "v6e-4"}) == "calibration"
  assert report.classify({"kind": "measured", "mfu": 0.3, "seconds_per_step": 1.0}) == "measured"
  assert report.classify({"topology": "v5p-64", "flops_per_step": 1.0}) == "projection"
  # A measured TPU run with a topology stays measured.
  assert report.classify({"topology": "v5p-64", "mfu": 0.3, "step_s": 1.0, "measured": True}) == "measured"
  assert report.classify({"mfu": 0.3, "step_s": 1.0}) == "measured"
  assert report.classify({"bench": "x", "ratio": 1.0}) == "cpu"
  assert report.classify({"device": "cpu", "seconds": 1.0}) == "cpu"
  assert report.classify({"x": 1}) is None
