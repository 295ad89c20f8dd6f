"""Summarise benchmarks/results/*.jsonl into REPORT.md (tables) and throughput.png (MFU chart).

    python benchmarks/report.py [--results benchmarks/results] [--out benchmarks/results]

Each line of a results file is one JSON object; the files are heterogeneous. Rows are sorted into
four kinds, each with its own table:
  measured     a timed run on an accelerator (`measured: true` or `kind: measured`, or
               `mfu`/`tflops_per_device` with `step_s`), e.g. gpu_h100.jsonl, train_h100.jsonl;
  projection   an ahead-of-time compile for a TPU topology (`mfu_upper_bound`, or `topology` with
               `flops_per_step`): a roofline from the compiled HLO, not a measurement;
  calibration  the same roofline applied to a measured step (`kind: roofline calibration`,
               launch/aot_compile.py --calibrate): how much of it the real step reached;
  cpu          CPU micro-benchmarks (rows with `bench`, or a CPU device).
Rows that fit none, or lack the fields their kind needs, are skipped and listed under "Skipped
rows"; unparsable lines likewise. Nothing here crashes on a malformed row.

The chart shows MFU per device (model FLOPs over the chip's bf16 peak) for measured runs and
projections (the roofline upper bound as a bar, the calibrated estimate as a mark), against
public anchors (MaxDiffusion, Megatron-Bridge, MaxText). Both outputs are written atomically
(temporary file in the output directory, then rename).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import sys

from wildactor_jax import fs

# Public anchors (docs/method.md s.5): MFU in percent.
ANCHORS = [
    {"label": "MaxDiffusion (JAX) Wan2.1-14B train, v5p-8", "mfu": 29.6, "detail": "720p/81f, 36.0 s/step"},
    {"label": "Megatron-Bridge (PyTorch) Wan2.1-14B train, H100", "mfu": 32.9, "detail": "325.8 TFLOP/s per GPU"},
]
ANCHOR_BAND = {"label": "MaxText LLM training, v6e / TPU7x", "lo": 44.0, "hi": 52.0,
               "detail": "44-52% (68.5% on v5p for 405B)"}

# bf16 dense peak TFLOP/s per JAX device (docs/method.md s.4), used only when a measured row
# has TFLOP/s but neither `mfu` nor `peak_tflops`. TPU7x is left out: 2 devices per chip.
PEAKS = [("H100", 989.0), ("H200", 989.0), ("B200", 2250.0), ("v5p", 459.0), ("v6e", 918.0),
         ("v5e", 197.0), ("v5 lite", 197.0), ("v4", 275.0)]

BACKBONES = {"wan22_ti2v_5b": "Wan2.2-5B", "wan21_t2v_1p3b": "Wan2.1-1.3B",
             "wan21_t2v_14b": "Wan2.1-14B", "tiny": "tiny"}
MODES = {"generate_step_cfg_cached_refs": "generate, CFG, cached refs",
         "generate_step_cfg_no_refs": "generate, CFG, no refs",
         "train_fwd_bwd_lora_grads": "train fwd+bwd, LoRA grads"}
# CPU rows: bookkeeping keys, never shown as results or settings.
CPU_SKIP = {"bench", "command", "date", "jax", "torch", "device", "note", "software", "measured"}
METRIC_RE = re.compile(r"(^seconds$|_s$|_s_|_per_s$|ratio|err|mfu|flops)")


class Skip(Exception):
  """A row that cannot be reported; the message says why."""


# --- reading ---

def read_rows(results_dir: str) -> tuple[list[dict], list[str]]:
  """All JSON-object lines of *.jsonl under results_dir, each tagged with _source; plus notes."""
  rows, notes = [], []
  for path in sorted(glob.glob(os.path.join(results_dir, "*.jsonl"))):
    name = os.path.basename(path)
    try:
      with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
      notes.append(f"{name}: unreadable ({e.__class__.__name__}: {e})")
      continue
    for number, line in enumerate(lines, 1):
      if not line.strip():
        continue
      where = f"{name}:{number}"
      try:
        row = json.loads(line)
      except ValueError as e:
        notes.append(f"{where}: not JSON ({e})")
        continue
      if not isinstance(row, dict):
        notes.append(f"{where}: not a JSON object")
        continue
      row["_source"] = where
      rows.append(row)
  return rows, notes


CALIBRATION_KIND = "roofline calibration"  # launch/aot_compile.py's calibration rows


def classify(row: dict) -> str | None:
  if row.get("kind") == CALIBRATION_KIND:
    return "calibration"
  if row.get("measured") is not True and (
      "mfu_upper_bound" in row or "predicted_mfu" in row or row.get("kind") in ("aot", "projection")
      or ("topology" in row and "flops_per_step" in row)):
    return "projection"
  if row.get("measured") is True or row.get("kind") == "measured" or (
      ("mfu" in row or "tflops_per_device" in row) and "step_s" in row):
    if row.get("measured") is True and "bench" in row and "mfu" not in row and "tflops_per_device" not in row:
      return "cpu"
    return "measured"
  if "bench" in row or "cpu" in str(row.get("device", "")).lower():
    return "cpu"
  return None


# --- small helpers ---

def _num(row: dict, key: str, required: bool = False) -> float | None:
  value = row.get(key)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    if required:
      raise Skip(f"missing or non-numeric {key!r}")
    return None
  return float(value)


def _cell(value) -> str:
  text = "—" if value is None or value == "" else str(value)
  return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> list[str]:
  out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
  out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
  return out


def _fmt(x: float | None, digits: int = 3) -> str | None:
  if x is None:
    return None
  if x == 0:
    return "0"
  if abs(x) >= 10 ** digits:
    return f"{x:,.0f}"
  return f"{x:.{digits}g}"


def _pct(x: float | None) -> str | None:
  return None if x is None else f"{100 * x:.1f}%"


def _device_short(name: str) -> str:
  for token in ("H100", "H200", "B200", "A100", "TPU7x", "v5p", "v6e", "v5e", "v5 lite", "v4"):
    if token.lower() in name.lower():
      return token
  return name[:16]


def _peak_for(device: str) -> float | None:
  for token, peak in PEAKS:
    if token.lower() in device.lower():
      return peak
  return None


def _clip(row: dict) -> str | None:
  res, frames = row.get("resolution"), row.get("frames")
  if res is None and frames is None:
    return None
  return f"{res or '?'}, {frames} f" if frames is not None else str(res)


# --- per-kind rows ---

def measured_entry(row: dict) -> dict:
  step_s = _num(row, "step_s") or _num(row, "seconds_per_step")
  tflops = _num(row, "tflops_per_device") or _num(row, "model_tflops_per_device")
  mfu = _num(row, "mfu")
  device = str(row.get("device", "?"))
  peak = _num(row, "peak_tflops") or _peak_for(device)
  if mfu is None and tflops is not None and peak:
    mfu = tflops / peak
  if tflops is None and mfu is not None and peak:
    tflops = mfu * peak
  if mfu is None:
    raise Skip("measured row without 'mfu' (or 'tflops_per_device' and a known peak)")
  backbone = str(row.get("backbone", row.get("model", "?")))
  mode = str(row.get("mode", row.get("bench", "?")))
  if mode == "?" and "python -m wildactor_jax.train" in str(row.get("command", "")):
    mode = (f"trainer, batch {row.get('global_batch', '?')}, remat {row.get('remat', '?')}, "
            f"{row.get('attention', '?')} attention")
  return {"source": row["_source"], "device": device, "backbone": BACKBONES.get(backbone, backbone),
          "mode": MODES.get(mode, mode), "clip": _clip(row) or row.get("clip"), "step_s": step_s,
          "tokens_per_s": _num(row, "tokens_per_s") or _num(row, "tokens_per_sec_per_device"),
          "tflops": tflops, "mfu": mfu, "date": row.get("date"),
          "slots": "every" if "r_max" in str(row.get("note", "")) else "valid"}


def projection_entry(row: dict) -> dict:
  if "mfu_upper_bound" in row:
    mfu = _num(row, "mfu_upper_bound", required=True)
    no_overlap, calibrated = _num(row, "mfu_no_overlap"), _num(row, "mfu_calibrated")
  else:  # rows from before the three figures: `predicted_mfu` was the same upper bound
    mfu = _num(row, "predicted_mfu")
    if mfu is None:
      raise Skip("projection row without a numeric 'mfu_upper_bound'")
    no_overlap, calibrated = _num(row, "predicted_mfu_no_overlap"), None
  devices = _num(row, "devices")
  step = _num(row, "step_time_s")
  flops = _num(row, "flops_per_step")
  tflops = flops / devices / step / 1e12 if flops and devices and step else None
  topology = str(row.get("topology", row.get("topology_name", "?")))
  slices = row.get("num_slices", 1)
  if isinstance(slices, int) and slices > 1:
    topology = f"{slices} x {topology}"
  peak_b, hbm_b = _num(row, "peak_bytes"), _num(row, "hbm_bytes")
  memory = None
  if peak_b is not None:
    memory = f"{peak_b / 2**30:.1f}" + (f" / {hbm_b / 2**30:.0f}" if hbm_b else "")
  fits = row.get("fits")
  model = str(row.get("config") or row.get("model") or "?")
  return {"source": row["_source"], "model": BACKBONES.get(model, model), "topology": topology,
          "devices": None if devices is None else int(devices), "device_kind": row.get("device_kind"),
          "global_batch": row.get("global_batch"), "memory": memory,
          "fits": None if fits is None else ("yes" if fits else "NO"), "step_s": step,
          "tflops": tflops, "mfu": mfu, "no_overlap": no_overlap, "calibrated": calibrated,
          "bound": _bound(row), "tokens": _num(row, "tokens_per_step"),
          "step": ", ".join(f"{k} {row[k]}" for k in ("attention", "remat") if row.get(k)) or None}


def _bound(row: dict) -> str | None:
  if isinstance(row.get("bound"), str):
    return {"hbm": "HBM", "collectives": "ICI"}.get(row["bound"], row["bound"])
  compute, memory = _num(row, "compute_s"), _num(row, "memory_s")
  if compute is None or memory is None:
    return None
  return "compute" if compute >= memory else "HBM"


def calibration_entry(row: dict) -> dict:
  measured = _num(row, "measured_step_s", required=True)
  roofline = _num(row, "roofline_step_s", required=True)
  return {"source": row["_source"], "measured_source": row.get("source"),
          "device": str(row.get("device_kind", row.get("measured", "?"))),
          "command": row.get("measured_command"), "measured_s": measured, "roofline_s": roofline,
          "serial_s": _num(row, "serial_step_s"), "bound": _bound(row),
          "ratio": _num(row, "roofline_over_measured") or roofline / measured}


def cpu_entry(row: dict) -> dict:
  name = row.get("bench")
  if not isinstance(name, str) or not name:
    raise Skip("CPU row without a 'bench' name")
  metrics, settings = [], []
  for key, value in row.items():
    if key.startswith("_") or key in CPU_SKIP:
      continue
    if isinstance(value, bool):
      settings.append(f"{key}={value}")
    elif isinstance(value, (int, float)):
      text = f"{key}={_fmt(float(value), 4) if isinstance(value, float) or abs(value) >= 10**4 else value}"
      (metrics if METRIC_RE.search(key) else settings).append(text)
    elif isinstance(value, (str, list)) and len(str(value)) <= 40:
      settings.append(f"{key}={value}")
  return {"source": row["_source"], "bench": name, "results": ", ".join(metrics[:8]),
          "settings": ", ".join(settings[:8]), "device": row.get("device"), "date": row.get("date")}


ENTRY = {"measured": measured_entry, "projection": projection_entry,
         "calibration": calibration_entry, "cpu": cpu_entry}


def collect(rows: list[dict], notes: list[str]) -> dict[str, list[dict]]:
  kinds: dict[str, list[dict]] = {k: [] for k in ENTRY}
  for row in rows:
    kind = classify(row)
    if kind is None:
      notes.append(f"{row['_source']}: not a measured run, AOT projection or CPU benchmark row "
                    f"(keys: {', '.join(sorted(k for k in row if not k.startswith('_'))[:8])})")
      continue
    try:
      kinds[kind].append(ENTRY[kind](row))
    except Skip as e:
      notes.append(f"{row['_source']}: skipped {kind} row: {e}")
    except Exception as e:  # noqa: BLE001 -- a report must not die on one odd row
      notes.append(f"{row['_source']}: skipped {kind} row ({e.__class__.__name__}: {e})")
  return kinds


# --- outputs ---

def render_markdown(kinds: dict[str, list[dict]], notes: list[str], results_dir: str) -> str:
  out = ["# Benchmark report", "",
         "Generated by `benchmarks/report.py` from the `*.jsonl` files next to it (one JSON object"
         " per run); do not edit by hand. MFU counts model FLOPs only, over the chip's bf16 dense"
         " peak.",
         "Chart: `throughput.png`.", ""]

  out += ["## Measured device runs", "",
          "MFU as each row recorded it. \"reference slots\": what its model FLOPs counted, every"
          " reference slot (padding included, as rows noted \"r_max\" did) or valid references"
          " only (`flops.step_flops_for_config`: the mean over the config's reference-count"
          " distribution, 8-9% fewer model FLOPs for the 5B step than every slot).", ""]
  if kinds["measured"]:
    out += _table(["backbone", "clip", "mode", "device", "step (s)", "tokens/s",
                   "model TFLOP/s per device", "MFU", "reference slots", "source"],
                  [[e["backbone"], e["clip"], e["mode"], _device_short(e["device"]), _fmt(e["step_s"]),
                    _fmt(e["tokens_per_s"]), _fmt(e["tflops"]), _pct(e["mfu"]), e["slots"],
                    e["source"]]
                   for e in kinds["measured"]])
  else:
    out.append("No measured device runs.")
  out.append("")

  out += ["## AOT projections (not measurements)", "",
          "Ahead-of-time compiles of the real train step for a TPU topology on a CPU machine"
          " (`launch/aot_compile.py`). Per device, from the compiled HLO (every loop weighted by"
          " its trip count) plus the splash kernel's analytic cost: compute = FLOPs / peak, HBM ="
          " bytes / bandwidth, ICI = collective bytes / link bandwidth. The roofline step is their"
          " maximum: every FLOP at 100% of peak and perfect overlap, no host, launch or idle time."
          " Its MFU is an upper bound, never a prediction; \"no overlap\" runs the terms one after"
          " another; \"calibrated\" is the upper bound times the fraction of the same roofline a"
          " measured one-H100 step reached (calibration below), assuming the TPU step reaches its"
          " roofline as well: an estimate, not a measurement. Model FLOPs count valid references"
          " only.", ""]
  if kinds["projection"]:
    out += _table(["model / config", "step", "topology", "devices", "global batch", "tokens per step",
                   "peak memory / HBM (GiB)", "fits", "roofline step (s)", "bound",
                   "model TFLOP/s per device at the bound", "MFU upper bound", "MFU no overlap",
                   "MFU calibrated (estimate)", "source"],
                  [[e["model"], e["step"], e["topology"], e["devices"], e["global_batch"],
                    _fmt(e["tokens"]), e["memory"], e["fits"], _fmt(e["step_s"]), e["bound"],
                    _fmt(e["tflops"]), _pct(e["mfu"]), _pct(e["no_overlap"]), _pct(e["calibrated"]),
                    e["source"]]
                   for e in kinds["projection"]])
  else:
    out.append("No AOT projections.")
  out.append("")
  out += ["### Roofline calibration", "",
          "The same roofline applied to a measured step: its config compiled deviceless for one"
          " TPU chip (splash standing in for a GPU's fused attention kernel), its terms at the"
          " measured chip's peak and bandwidth, against the step time measured on that chip.", ""]
  if kinds["calibration"]:
    out += _table(["measured step", "device", "measured (s)", "roofline (s)", "bound",
                   "roofline no overlap (s)", "fraction of the roofline reached", "source"],
                  [[e["measured_source"], _device_short(e["device"]), _fmt(e["measured_s"]),
                    _fmt(e["roofline_s"]), e["bound"], _fmt(e["serial_s"]),
                    _fmt(e["ratio"]), e["source"]] for e in kinds["calibration"]])
  else:
    out.append("No calibration rows (launch/aot_compile.py --calibrate).")
  out.append("")

  out += ["## CPU micro-benchmarks", "",
          "Shared 2-core development machine: timings are noisy; ratios are the point.", ""]
  if kinds["cpu"]:
    out += _table(["bench", "results", "settings", "device", "date", "source"],
                  [[e["bench"], e["results"], e["settings"], e["device"], e["date"], e["source"]]
                   for e in kinds["cpu"]])
  else:
    out.append("No CPU micro-benchmarks.")
  out.append("")

  out += ["## Public anchors (not ours)", ""]
  out += _table(["what", "MFU", "detail"],
                [[a["label"], f"{a['mfu']:.1f}%", a["detail"]] for a in ANCHORS]
                + [[ANCHOR_BAND["label"], f"{ANCHOR_BAND['lo']:.0f}-{ANCHOR_BAND['hi']:.0f}%",
                    ANCHOR_BAND["detail"]]])
  out.append("")

  out += ["## Skipped rows", ""]
  out += [f"- {n}" for n in notes] if notes else ["None."]
  out.append("")
  return "\n".join(out)


def _bar_label(e: dict, kind: str) -> str:
  if kind == "measured":
    mode = (e["mode"].replace("generate, CFG, ", "gen ").replace("train fwd+bwd, LoRA grads", "train LoRA")
            .replace("trainer, batch ", "trainer b").replace(", remat ", "\n")
            .replace(", ", "\n").replace(" attention", ""))
    return f"{e['backbone']}\n{mode}\n{_device_short(e['device'])}"
  step = (e.get("step") or "").replace("attention ", "").replace(", remat full", "")
  tokens = f"{e['tokens'] / 1e3:.0f}k tok" if e.get("tokens") else ""
  return f"{e['model']}\n{e['topology']}\n{step}\n{tokens}\nAOT upper bound"


def render_chart(kinds: dict[str, list[dict]], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.patches import Patch

  bars = [(e, "measured") for e in kinds["measured"]] + [(e, "projection") for e in kinds["projection"]]
  width = max(8.0, 1.05 * len(bars) + 4.5)
  fig, ax = plt.subplots(figsize=(width, 6.2), dpi=110)
  values = [100 * e["mfu"] for e, _ in bars]
  colors = ["tab:blue" if k == "measured" else "tab:orange" for _, k in bars]
  xs = list(range(len(bars)))
  rects = ax.bar(xs, values, color=colors, width=0.7, edgecolor="black", linewidth=0.6, zorder=2)
  for rect, (e, kind) in zip(rects, bars):
    if kind == "projection":
      rect.set_hatch("//")
    text = f"{100 * e['mfu']:.1f}%"
    if e.get("tflops") is not None:
      text += f"\n{e['tflops']:.0f} TF/s"
    ax.annotate(text, (rect.get_x() + rect.get_width() / 2, rect.get_height()), ha="center",
                va="bottom", fontsize=7.5, xytext=(0, 2), textcoords="offset points")
  marks = [(x, 100 * e["calibrated"]) for x, (e, k) in zip(xs, bars)
           if k == "projection" and e.get("calibrated") is not None]
  if marks:
    ax.scatter([x for x, _ in marks], [y for _, y in marks], marker="_", s=500, linewidths=2.5,
               color="black", zorder=4)
    for x, y in marks:
      ax.annotate(f"{y:.1f}%", (x, y), ha="left", va="center", fontsize=7, xytext=(12, 0),
                  textcoords="offset points")
  ax.set_xticks(xs)
  ax.set_xticklabels([_bar_label(e, k) for e, k in bars], fontsize=7)

  handles = [Patch(facecolor="tab:blue", edgecolor="black", label="measured (model TFLOP/s per device / peak)"),
             Patch(facecolor="tab:orange", edgecolor="black", hatch="//",
                   label="AOT projection: roofline upper bound")]
  if marks:
    from matplotlib.lines import Line2D
    handles.append(Line2D([], [], color="black", marker="_", markersize=14, linestyle="none",
                          markeredgewidth=2.5,
                          label="AOT calibrated estimate (upper bound x measured H100 fraction)"))
  styles = ["--", "-."]
  for anchor, style in zip(ANCHORS, styles):
    handles.append(ax.axhline(anchor["mfu"], color="tab:red" if style == "--" else "tab:green",
                              linestyle=style, linewidth=1.3, zorder=3,
                              label=f"{anchor['label']}: {anchor['mfu']:.1f}% ({anchor['detail']})"))
  handles.append(ax.axhspan(ANCHOR_BAND["lo"], ANCHOR_BAND["hi"], color="tab:gray", alpha=0.18, zorder=0,
                            label=f"{ANCHOR_BAND['label']}: {ANCHOR_BAND['lo']:.0f}-{ANCHOR_BAND['hi']:.0f}%"))
  top = max(values + [ANCHOR_BAND["hi"]])
  ax.set_ylim(0, top * 1.3)
  ax.set_xlim(-0.8, max(len(bars), 1) - 0.2)
  ax.set_ylabel("MFU per device (%)")
  ax.set_title("WildActor JAX: model-FLOPs utilisation per device, with public anchors")
  if not bars:
    ax.text(0.5, 0.5, "no measured runs or projections in the results", transform=ax.transAxes,
            ha="center", va="center", fontsize=10)
  ax.legend(handles=handles, fontsize=7.5, loc="upper left", framealpha=0.9)
  ax.grid(axis="y", alpha=0.3, zorder=0)
  ax.set_axisbelow(True)
  fig.tight_layout()
  fs.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
  plt.close(fig)


def main(argv: list[str] | None = None) -> int:
  here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--results", default=here, help="directory of *.jsonl (default: benchmarks/results)")
  parser.add_argument("--out", default=None, help="output directory (default: the results directory)")
  args = parser.parse_args(argv)
  if not os.path.isdir(args.results):
    parser.error(f"--results {args.results}: not a directory")
  out_dir = args.out or args.results
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    parser.error(f"--out {out_dir}: cannot create ({e.strerror})")

  rows, notes = read_rows(args.results)
  kinds = collect(rows, notes)
  report = render_markdown(kinds, notes, args.results)
  report_path, chart_path = os.path.join(out_dir, "REPORT.md"), os.path.join(out_dir, "throughput.png")
  fs.atomic_write_text(report_path, report)
  render_chart(kinds, chart_path)
  counts = ", ".join(f"{len(v)} {k}" for k, v in kinds.items())
  print(f"report: {counts}, {len(notes)} skipped -> {report_path}, {chart_path}")
  for note in notes:
    print(f"  skipped: {note}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
