"""The roofline behind launch/aot_compile.py's figures, and its calibration on a measured step.

A deviceless compile gives, per device, FLOPs, HBM bytes and collective time; on a chip with
peak P and bandwidth B the terms are compute = FLOPs / P, HBM = bytes / B and ICI. Their maximum
(perfect overlap, everything at peak) is the roofline step, their sum the no-overlap step. MFU
against each (`mfu_figures`) is an upper bound and a no-overlap figure; the calibrated figure
multiplies the upper bound by the fraction of the same roofline a measured step reached
(`roofline_over_measured` of a calibration row, which aot_compile --calibrate writes from a
measured one-device row: `read_measured`, `measured_config`). Chip figures: flops.CHIPS.
"""
from __future__ import annotations

import ast
import json
import os
import shlex

from wildactor_jax import flops as flops_lib, fs

CALIBRATION_KIND = "roofline calibration"  # the `kind` of a calibration row


def roofline(flops_per_device: float, bytes_per_device: float, ici_s: float | None,
             device_kind: str) -> dict:
  """The roofline terms on one `device_kind` chip, their max (perfect overlap) and sum."""
  spec = flops_lib.chip_spec(device_kind)
  if spec is None:
    raise ValueError(f"device kind {device_kind!r}: no peak/HBM figures in "
                     "wildactor_jax/flops.CHIPS")
  peak, _, hbm_tbps = spec
  terms = {"compute": flops_per_device / (peak * 1e12),
           "hbm": bytes_per_device / (hbm_tbps * 1e12), "collectives": ici_s or 0.0}
  return {"terms": terms, "step_s": max(terms.values()), "serial_s": sum(terms.values()),
          "bound": max(terms, key=terms.get), "peak_tflops": peak}


def mfu_figures(model_flops_per_device: float, peak_tflops: float, step_s: float, serial_s: float,
                calibration: dict | None) -> dict:
  """mfu_upper_bound, mfu_no_overlap and mfu_calibrated (None without a calibration row)."""
  upper = model_flops_per_device / (peak_tflops * 1e12) / step_s
  ratio = None if calibration is None else calibration["roofline_over_measured"]
  return {"mfu_upper_bound": upper,
          "mfu_no_overlap": model_flops_per_device / (peak_tflops * 1e12) / serial_s,
          "mfu_calibrated": None if ratio is None else upper * ratio}


def read_measured(spec: str) -> tuple[dict, str]:
  """FILE:LINE -> (the measured row, "FILE_NAME:LINE"); one-line ValueErrors otherwise."""
  path, _, line = spec.rpartition(":")
  if not path or not line.isdigit() or int(line) < 1:
    raise ValueError(f"--measured {spec}: expected FILE.jsonl:LINE")
  if not fs.isfile(path):
    raise ValueError(f"--measured {spec}: no such file {path}")
  lines = fs.read_text(path).splitlines()
  if int(line) > len(lines):
    raise ValueError(f"--measured {spec}: {path} has {len(lines)} lines")
  row = json.loads(lines[int(line) - 1])
  missing = [k for k in ("device_kind", "step_s", "command") if k not in row]
  if missing or row.get("measured") is not True or int(row.get("num_devices", 1)) != 1:
    raise ValueError(f"--measured {spec}: expected a measured one-device row with device_kind, "
                     f"step_s and command (missing {missing})")
  return row, f"{os.path.basename(path)}:{line}"


def measured_config(command: str):
  """The experiment config a measured row's command ran: --config FILE[:ARG] and its
  --config.KEY=VALUE overrides (values as Python literals, else strings)."""
  from wildactor_jax.config_lib import load_config_file
  words = shlex.split(command)
  if "--config" not in words:
    raise ValueError(f"measured command {command!r}: no --config")
  config = load_config_file(words[words.index("--config") + 1])
  for word in words:
    if word.startswith("--config.") and "=" in word:
      key, value = word[len("--config."):].split("=", 1)
      try:
        value = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        pass
      node = config
      *parents, leaf = key.split(".")
      for part in parents:
        node = node[part]
      node[leaf] = value
  return config


def newest_calibration(path: str) -> dict | None:
  """The last roofline calibration row of a .jsonl file (None if there is none)."""
  if not fs.isfile(path):
    return None
  rows = [json.loads(l) for l in fs.read_text(path).splitlines() if l.strip()]
  found = [r for r in rows if r.get("kind") == CALIBRATION_KIND]
  return found[-1] if found else None
