"""wildactor_jax/roofline.py: the terms, the three MFU figures, and reading a measured row to
calibrate on (the compile itself: tests/test_train.py's AOT test)."""
import json

import pytest

from wildactor_jax import roofline


def test_terms_and_the_three_figures():
  r = roofline.roofline(989e12 * 0.5, 3.35e12 * 0.8, 0.1, "NVIDIA H100 80GB HBM3")
  assert r["terms"] == pytest.approx({"compute": 0.5, "hbm": 0.8, "collectives": 0.1})
  assert (r["step_s"], r["bound"], r["peak_tflops"]) == (pytest.approx(0.8), "hbm", 989.0)
  assert r["serial_s"] == pytest.approx(1.4)
  f = roofline.mfu_figures(989e12 * 0.4, 989.0, r["step_s"], r["serial_s"],
                           {"roofline_over_measured": 0.5})
  assert f == pytest.approx({"mfu_upper_bound": 0.5, "mfu_no_overlap": 0.4 / 1.4,
                             "mfu_calibrated": 0.25})
  assert roofline.mfu_figures(1.0, 1.0, 1.0, 2.0, None)["mfu_calibrated"] is None
  with pytest.raises(ValueError, match="device kind 'cpu'"):
    roofline.roofline(1.0, 1.0, 0.0, "cpu")


def test_measured_rows_and_their_configs(tmp_path):
  rows = tmp_path / "m.jsonl"
  good = {"measured": True, "num_devices": 1, "device_kind": "NVIDIA H100 80GB HBM3", "step_s": 0.8,
          "command": "python -m wildactor_jax.bench --config configs/wildactor_wan22_5b.py:tiny "
                     "--steps 5 --config.model.remat=full '--config.mesh.shape=(1,1,1,1)'"}
  rows.write_text(json.dumps(good) + "\n" + json.dumps(dict(good, num_devices=8)) + "\n")
  row, where = roofline.read_measured(f"{rows}:1")
  assert row == good and where == "m.jsonl:1"
  config = roofline.measured_config(row["command"])
  assert config.model.remat == "full" and tuple(config.mesh.shape) == (1, 1, 1, 1)
  for spec, message in [(f"{rows}:2", "one-device row"), (f"{rows}:3", "has 2 lines"),
                        (f"{rows}", "FILE.jsonl:LINE"), (f"{tmp_path}/x.jsonl:1", "no such file")]:
    with pytest.raises(ValueError, match=message):
      roofline.read_measured(spec)
  plans = tmp_path / "aot.jsonl"
  assert roofline.newest_calibration(str(plans)) is None
  plans.write_text("".join(json.dumps(r) + "\n" for r in [
      {"kind": roofline.CALIBRATION_KIND, "roofline_over_measured": 0.5}, {"topology": "v5p-64"},
      {"kind": roofline.CALIBRATION_KIND, "roofline_over_measured": 0.7}, {"topology": "v6e-64"}]))
  assert roofline.newest_calibration(str(plans))["roofline_over_measured"] == 0.7
