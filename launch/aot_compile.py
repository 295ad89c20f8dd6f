"""Ahead-of-time planning: compile the real train step for a TPU slice on a CPU machine.

    python launch/aot_compile.py --config configs/wildactor_wan22_5b.py:v6e-64 --topology v6e-64
    python launch/aot_compile.py --config configs/X.py --topology v5p-64 --num_slices 2 \\
      --append benchmarks/results/aot_tpu.jsonl

Needs the `libtpu` of setup.py's `tpu` extra (compile-only TPU devices, no TPU attached) and must
not run with JAX_PLATFORMS=cpu. Prints a per-term breakdown, then one JSON line: per-device memory
from XLA's memory analysis and whether it fits the chip's HBM, the analytic model FLOPs of a step,
a roofline step time and the MFU it implies, versions, and the compile time. Nothing is
allocated: inputs are sharded ShapeDtypeStructs. --append also adds the line to a JSONL file.
--program distill compiles one few-step distillation step instead (python -m wildactor_jax.distill
with config.distill; no teacher is read) and reports its memory and compile time; --program
generate one denoising step of config.sample (a guided teacher's, or with --config.sample.cfg=1
a distilled student's) with its memory, roofline and the clip's denoising time.

Topology names follow Cloud TPU: v5p-N and v4-N count TensorCores (2 per chip, one jax device
per chip), v5e-N / v6e-N count chips. One compile of the real step gives every term, per device
(wildactor_jax/hlo_costs.py reads its optimized HLO, each loop body weighted by its trip count,
so the layer scan, the remat recomputation and any query-chunk loop count in full):
  compute     = (dot/convolution FLOPs in the HLO + splash kernel FLOPs) / peak
  HBM         = (bytes of the HLO's top-level ops + splash kernel bytes) / HBM bandwidth
  collectives = bytes each device moves over ICI (ring all-gather / reduce-scatter / all-reduce /
                all-to-all) / the bandwidth of the torus dimensions its group spans
  step_time   = max of the three (XLA overlaps collectives and prefetches with compute);
                `serial_step_s` is their sum, the no-overlap bound
A Mosaic kernel is an opaque custom call to XLA: its operand/result bytes are left out of the
HBM term and replaced by the kernel's analytic FLOPs and HBM traffic (flops.splash_step_cost,
documented there); XLA's own cost analysis, which counts every loop body once, is kept in the
row for reference (`xla_*_loop_once`). Bandwidths: flops.CHIPS and flops.ICI (docs/method.md s.4).

Three MFU figures, each model FLOPs (analytic, wildactor_jax/flops.py: valid references only,
the mean over the config's reference-count distribution) / (a step time x peak):
  mfu_upper_bound  step_time: every FLOP at 100% of peak, every byte at full bandwidth and
                   perfect overlap; no host, launch or idle time, DCN counted but not timed.
                   An upper bound, never a prediction.
  mfu_no_overlap   serial_step_s: the same terms run one after the other.
  mfu_calibrated   mfu_upper_bound x the fraction of this same roofline that a measured step
                   reached: the one-H100 LoRA train step of benchmarks/results/gpu_h100.jsonl
                   (line 3: Wan2.2-5B, batch 1, full remat, cuDNN attention), compiled here
                   deviceless for one TPU chip (splash standing in for the fused cuDNN kernel),
                   its terms taken at the H100's peak and bandwidth (no collectives on one
                   device), over its measured step time. It assumes the TPU step reaches its
                   roofline as well as the H100 step did: an estimate, not a measurement.
`--calibrate` compiles that step and adds its row (`kind: roofline calibration`); a plan reads
the newest such row from --calibration (default benchmarks/results/aot_tpu.jsonl).
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Compile-only devices touch no chip: let several planners (or test runs) load libtpu at once.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from jax.experimental import mesh_utils, topologies  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from wildactor_jax import cli, flops as flops_lib, fs, hlo_costs  # noqa: E402
from wildactor_jax.roofline import (CALIBRATION_KIND, measured_config, mfu_figures,  # noqa: E402
                                    newest_calibration, read_measured, roofline)
from wildactor_jax.sharding import create_mesh  # noqa: E402
from wildactor_jax.input import batches  # noqa: E402
from wildactor_jax.train_lib import state as state_lib, step as step_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "v5p-64, v6e-64, v5e-4, ... or v5p:2x4x4")
_NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "slices joined over DCN (the data axis)")
_APPEND = flags.DEFINE_string("append", None, "also append the JSON line to this .jsonl file")
_DUMP_HLO = flags.DEFINE_string("dump_hlo", None, "write the compiled step's optimized HLO text here")
_CALIBRATE = flags.DEFINE_bool("calibrate", False, "compile the measured step (--measured) and add "
                               "its roofline calibration row; with --config/--topology, then plan")
_MEASURED = flags.DEFINE_string("measured", "benchmarks/results/gpu_h100.jsonl:3",
                                "FILE:LINE of the measured one-device step --calibrate calibrates on")
_CALIBRATION = flags.DEFINE_string("calibration", "benchmarks/results/aot_tpu.jsonl",
                                   "a .jsonl whose newest roofline calibration row a plan uses")

# The deviceless compile a measured one-device step's terms come from: one chip of this slice.
CALIBRATION_TOPOLOGY = "v6e-4"

_PROGRAM = flags.DEFINE_enum(
    "program", "train", ["train", "distill", "generate"],
    "the step to compile: WildActor's train step (memory + roofline); one few-step "
    "distillation step (wildactor_jax/distill; memory and compile time only: its student "
    "rollout is a loop of data-dependent length, which the roofline cannot weight); or one "
    "denoising step of config.sample on config.data's clip (memory + roofline, and the clip's "
    "denoising time from it: --config.sample.cfg=1 --config.sample.solver=fewstep "
    "--config.sample.steps=4 for a distilled student)")

# Chips -> physical topology: 3D tori (v4, v5p) and 2D (v5e, v6e).
SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
             256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
             256: "16x16"}
CORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}


def topology_name(name: str) -> str:
  """Cloud TPU slice name (v5p-64) -> libtpu topology (v5p:2x4x4); "family:AxB" passes through."""
  if ":" in name:
    return name
  family, _, count = name.partition("-")
  family = {"v5litepod": "v5e"}.get(family, family)
  if family not in CORES_PER_CHIP or not count.isdigit():
    raise ValueError(f"--topology {name!r}: expected <v4|v5p|v5e|v6e>-<count> or family:AxB")
  chips, rem = divmod(int(count), CORES_PER_CHIP[family])
  table = SHAPES_3D if family in ("v4", "v5p") else SHAPES_2D
  if rem or chips not in table:
    raise ValueError(f"--topology {name!r}: {count} {'TensorCores' if rem or CORES_PER_CHIP[family] > 1 else 'chips'}"
                     f" is not a known {family} slice ({sorted(table)} chips)")
  return f"{family}:{table[chips]}"


def make_mesh(config, devices, num_slices: int):
  shape, axes = tuple(config.mesh.shape), tuple(config.mesh.axes)
  if num_slices == 1:
    return create_mesh(shape, axes, devices)
  per_slice = len(devices) // num_slices
  ici = list(shape)
  if -1 in ici:
    ici[ici.index(-1)] = per_slice // math.prod(s for s in ici if s != -1)
  dcn = (num_slices,) + (1,) * (len(axes) - 1)  # slices split the data axis
  grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
  return jax.sharding.Mesh(grid, axes)


def _parts(config, mesh):
  rs = state_lib.setup_from_config(config, mesh)
  batches.check_batch_divides_mesh(config, mesh, rs.rules)
  return rs.rules, rs.tx, rs.schedule, rs.setup, batches.abstract_batch(config, mesh, rs.rules)


def compile_step(config, mesh):
  """Lowers and compiles the train step on `mesh` from abstract inputs; (Compiled, rules)."""
  rules, tx, schedule, setup, batch = _parts(config, mesh)
  step = step_lib.jit_train_step(
      step_lib.make_train_step(setup, tx, schedule, float(config.flow.shift), mesh, rules),
      setup, batch, mesh, rules)
  return step.lower(setup.abstract_frozen, setup.abstract_train, batch).compile(), rules


def kernel_cost(config, mesh, rules) -> flops_lib.KernelCost:
  """Per device, all layers: what the splash kernel does that XLA's HLO cannot show."""
  cfg, video, refs, text = flops_lib.step_tokens(config)
  if cfg.attention != "splash":
    return flops_lib.KernelCost()
  return flops_lib.splash_step_cost(
      cfg, video, refs, text, batch=int(config.data.global_batch_size), train=True,
      mesh_shape=dict(zip(mesh.axis_names, mesh.devices.shape)), rules=rules)


def collective_seconds(collectives, mesh, device_kind: str) -> dict:
  """ICI time per collective kind, one device. A group's devices (partition ids = positions in
  the mesh) span some torus dimensions; in each, a bidirectional ring runs on 2 links, so the
  group moves data at 2 x dims x one link's one-way bandwidth. Groups across slices go over DCN:
  their bytes are reported (`dcn_bytes`), not timed."""
  link = flops_lib.ici_link_bytes_per_s(device_kind)
  flat = list(mesh.devices.flat)
  out = {"ici_bytes": 0.0, "dcn_bytes": 0.0, "ici_s": 0.0 if link else None, "by_kind": {}}
  for c in collectives:
    total = c.wire_bytes * c.count
    if not total:
      continue
    devices = [flat[i] for i in c.group]
    if len({getattr(d, "slice_index", 0) for d in devices}) > 1:
      out["dcn_bytes"] += total
      continue
    out["ici_bytes"] += total
    kind = out["by_kind"].setdefault(c.kind, {"bytes": 0.0, "s": 0.0 if link else None})
    kind["bytes"] += total
    if link:
      dims = sum(len(set(axis)) > 1 for axis in zip(*(d.coords for d in devices))) or 1
      kind["s"] += total / (2 * dims * link)
      out["ici_s"] += total / (2 * dims * link)
  return out


def _versions() -> dict:
  def version(name):
    try:
      return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      return None
  return {"jax": jax.__version__, "jaxlib": version("jaxlib"), "libtpu": version("libtpu")}


def slice_devices(topology: str, num_slices: int) -> tuple[str, list]:
  """(physical topology name, its compile-only devices) for a slice whose chip has peak/HBM
  figures in wildactor_jax/flops.CHIPS (a one-line ValueError otherwise)."""
  name = topology_name(topology)
  devices = topologies.get_topology_desc(platform="tpu", topology_name=name,
                                         num_slices=num_slices).devices
  if flops_lib.chip_spec(devices[0].device_kind) is None:
    raise ValueError(f"device kind {devices[0].device_kind!r}: no peak/HBM figures in "
                     "wildactor_jax/flops.CHIPS")
  return name, devices


def peak_bytes(mem) -> int:
  """A compiled program's per-device peak from XLA's memory analysis (donated inputs once)."""
  return int(mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
             + mem.temp_size_in_bytes)


def step_costs(config, devices, num_slices: int = 1, dump_hlo: str | None = None) -> dict:
  """Compiles the train step of `config` for `devices` (deviceless TPU) and reads its per-device
  costs: FLOPs and HBM bytes (optimized HLO + the kernel's analytic cost), ICI traffic and time,
  memory. The roofline terms are left to the caller (they depend on the chip's figures)."""
  mesh = make_mesh(config, devices, num_slices)
  kind = devices[0].device_kind
  start = time.perf_counter()
  compiled, rules = compile_step(config, mesh)
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  xla = compiled.cost_analysis()
  xla = xla[0] if isinstance(xla, (list, tuple)) else xla
  text = compiled.as_text()
  if dump_hlo:
    fs.atomic_write_text(dump_hlo, text)
  hlo = hlo_costs.analyze(text)
  kernel = kernel_cost(config, mesh, rules)
  ici = collective_seconds(hlo.collectives, mesh, kind)
  return {"mesh": mesh, "device_kind": kind, "compile_s": compile_s, "memory": mem,
          "peak_bytes": peak_bytes(mem), "xla": xla, "hlo": hlo, "kernel": kernel, "ici": ici,
          "flops": hlo.flops + kernel.flops, "bytes": hlo.bytes + kernel.hbm_bytes}


def plan(config, topology: str, num_slices: int, dump_hlo: str | None = None,
         calibration: dict | None = None) -> dict:
  name, devices = slice_devices(topology, num_slices)
  c = step_costs(config, devices, num_slices, dump_hlo)
  mesh, kind, mem, hlo, kernel, ici, xla = (c[k] for k in ("mesh", "device_kind", "memory", "hlo",
                                                           "kernel", "ici", "xla"))
  hbm_gib = flops_lib.chip_spec(kind)[1]
  r = roofline(c["flops"], c["bytes"], ici["ici_s"], kind)
  n = len(devices)
  model_flops = flops_lib.step_flops_for_config(config).train
  cal = None if calibration is None else {
      k: calibration.get(k) for k in ("source", "measured", "measured_step_s", "roofline_step_s",
                                      "roofline_over_measured", "date")}
  return {
      "topology": topology, "topology_name": name, "num_slices": num_slices, "devices": n,
      "device_kind": kind, "mesh": {k: int(v) for k, v in mesh.shape.items()},
      "model": config.model.get("name", "?"), "global_batch": int(config.data.global_batch_size),
      "tokens_per_step": flops_lib.tokens_per_step(config),
      "references_per_example": flops_lib.mean_references(config),
      "reference_slots": int(config.data.r_max),
      "remat": config.model.remat, "attention": config.model.attention,
      "context_parallel": config.model.get("context_parallel"),
      "splash_block_sizes": list(config.model.get("splash_block_sizes") or []),
      "argument_bytes": int(mem.argument_size_in_bytes), "output_bytes": int(mem.output_size_in_bytes),
      "alias_bytes": int(mem.alias_size_in_bytes), "temp_bytes": int(mem.temp_size_in_bytes),
      "peak_bytes": int(c["peak_bytes"]), "hbm_bytes": int(hbm_gib * 2**30),
      "fits": bool(c["peak_bytes"] <= hbm_gib * 2**30),
      "flops_per_step": model_flops, "model_flops_per_device": model_flops / n,
      "hlo_flops_per_device": hlo.flops, "kernel_flops_per_device": kernel.flops,
      "hlo_bytes_per_device": hlo.bytes, "kernel_bytes_per_device": kernel.hbm_bytes,
      "kernel_operand_bytes_left_out": hlo.kernel_bytes, "kernel_calls": hlo.kernel_calls,
      "hlo_bytes_by_opcode": {k: v for k, v in list(hlo.bytes_by_opcode.items())[:8]},
      "ici_bytes_per_device": ici["ici_bytes"], "dcn_bytes_per_device": ici["dcn_bytes"],
      "collectives": ici["by_kind"],
      "xla_flops_loop_once": float(xla.get("flops", 0.0)),
      "xla_bytes_loop_once": float(xla.get("bytes accessed", 0.0)),
      "compute_s": r["terms"]["compute"], "memory_s": r["terms"]["hbm"], "ici_s": ici["ici_s"],
      "step_time_s": r["step_s"], "bound": r["bound"], "serial_step_s": r["serial_s"],
      **mfu_figures(model_flops / n, r["peak_tflops"], r["step_s"], r["serial_s"], cal),
      "calibration": cal, "compile_s": c["compile_s"], **_versions(),
  }


def calibrate(measured: str, dump_hlo: str | None = None) -> dict:
  """The roofline of `plan`, applied to a measured one-device step (--measured FILE:LINE): that
  step's config compiled deviceless for one TPU chip with splash attention (the fused kernel
  nearest to a GPU's flash attention), its FLOPs and bytes at the measured chip's peak and
  bandwidth; `roofline_over_measured` is the fraction of that roofline the measured step reached."""
  row, where = read_measured(measured)
  config = measured_config(row["command"])
  config.model.attention = "splash"
  if math.prod(n for n in config.mesh.shape if n != -1) != 1:
    raise ValueError(f"--measured {measured}: mesh {tuple(config.mesh.shape)}, expected one device")
  devices = topologies.get_topology_desc(
      platform="tpu", topology_name=topology_name(CALIBRATION_TOPOLOGY)).devices[:1]
  c = step_costs(config, devices, 1, dump_hlo)
  r = roofline(c["flops"], c["bytes"], 0.0, row["device_kind"])
  measured_s = float(row["step_s"])
  return {
      "kind": CALIBRATION_KIND, "source": where, "measured": row.get("device", row["device_kind"]),
      "measured_command": row["command"], "measured_step_s": measured_s,
      "device_kind": row["device_kind"], "compiled_for": f"one chip of {CALIBRATION_TOPOLOGY}",
      "attention_compiled": "splash (standing in for the measured step's "
                            f"{row.get('attention', '?')} kernel)",
      "flops_per_device": c["flops"], "bytes_per_device": c["bytes"],
      "hlo_flops_per_device": c["hlo"].flops, "kernel_flops_per_device": c["kernel"].flops,
      "compute_s": r["terms"]["compute"], "memory_s": r["terms"]["hbm"],
      "roofline_step_s": r["step_s"], "serial_step_s": r["serial_s"], "bound": r["bound"],
      "roofline_over_measured": r["step_s"] / measured_s,
      "serial_over_measured": r["serial_s"] / measured_s,
      "compile_s": c["compile_s"], **_versions(),
  }


def plan_distill(config, topology: str, num_slices: int) -> dict:
  """Memory of one distillation step (config.distill, a teacher of config's model) on a slice."""
  from wildactor_jax.distill import run as distill_run
  name, devices = slice_devices(topology, num_slices)
  mesh = make_mesh(config, devices, num_slices)
  kind = devices[0].device_kind
  hbm = flops_lib.chip_spec(kind)[1] * 2**30
  start = time.perf_counter()
  step, args = distill_run.planning_step(config, mesh)
  compiled = step.lower(*args).compile()
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  peak = peak_bytes(mem)
  d = config.distill
  return {"program": "distill", "topology": topology, "topology_name": name,
          "num_slices": num_slices, "devices": len(devices), "device_kind": kind,
          "mesh": {k: int(v) for k, v in mesh.shape.items()},
          "model": config.model.get("name", "?"), "global_batch": int(config.data.global_batch_size),
          "remat": config.model.remat, "attention": config.model.attention,
          "student_steps": int(d.steps), "step_lora_rank": int(d.step_lora_rank),
          "critic_updates": int(d.critic_updates),
          "argument_bytes": int(mem.argument_size_in_bytes),
          "output_bytes": int(mem.output_size_in_bytes), "alias_bytes": int(mem.alias_size_in_bytes),
          "temp_bytes": int(mem.temp_size_in_bytes), "peak_bytes": peak,
          "hbm_bytes": int(hbm), "fits": bool(peak <= hbm),
          "compile_s": compile_s, **_versions()}


def plan_generate(config, topology: str, num_slices: int) -> dict:
  """One denoising step of config.sample (wildactor_jax/infer/denoise_program.py) on a slice:
  memory (the step's, and the once-per-clip reference encoding's), the roofline of the step,
  and the clip's denoising time at that roofline (steps x step). No calibration: the measured
  row it would scale by is a training step."""
  from wildactor_jax.infer.denoise_program import denoise_program
  from wildactor_jax.models.config import ModelConfig
  name, devices = slice_devices(topology, num_slices)
  kind = devices[0].device_kind
  mesh = make_mesh(config, devices, num_slices)
  start = time.perf_counter()
  program = denoise_program(config, mesh)
  compiled = program.step.lower(*program.args).compile()
  compile_s = time.perf_counter() - start
  info, cfg = program.info, ModelConfig.from_mapping(config.model)
  hlo = hlo_costs.analyze(compiled.as_text())
  kernel = flops_lib.KernelCost() if cfg.attention != "splash" else flops_lib.splash_step_cost(
      cfg, info["video_tokens"], info["reference_tokens_cached"], info["text_tokens"],
      batch=info["cfg_batch"], train=False, ref_cached=True,
      mesh_shape=dict(zip(mesh.axis_names, mesh.devices.shape)), rules=tuple(config.mesh.rules))
  ici = collective_seconds(hlo.collectives, mesh, kind)
  r = roofline(hlo.flops + kernel.flops, hlo.bytes + kernel.hbm_bytes, ici["ici_s"], kind)
  hbm = flops_lib.chip_spec(kind)[1] * 2**30
  mem, encode_mem = compiled.memory_analysis(), program.encode.memory_analysis()
  n, steps = len(devices), info["steps_per_clip"]
  model_flops = info.pop("model_flops_per_step")
  return {"program": "generate", "topology": topology, "topology_name": name,
          "num_slices": num_slices, "devices": n, "device_kind": kind,
          "mesh": {k: int(v) for k, v in mesh.shape.items()}, "model": config.model.get("name", "?"),
          "frames": program.settings.frames, "height": program.settings.height,
          "width": program.settings.width, "attention": cfg.attention, **info,
          "argument_bytes": int(mem.argument_size_in_bytes), "temp_bytes": int(mem.temp_size_in_bytes),
          "peak_bytes": peak_bytes(mem), "encode_peak_bytes": peak_bytes(encode_mem),
          "hbm_bytes": int(hbm), "fits": bool(max(peak_bytes(mem), peak_bytes(encode_mem)) <= hbm),
          "model_flops_per_step": model_flops, "hlo_flops_per_device": hlo.flops,
          "kernel_flops_per_device": kernel.flops, "hlo_bytes_per_device": hlo.bytes,
          "kernel_bytes_per_device": kernel.hbm_bytes, "ici_bytes_per_device": ici["ici_bytes"],
          "compute_s": r["terms"]["compute"], "memory_s": r["terms"]["hbm"], "ici_s": ici["ici_s"],
          "step_time_s": r["step_s"], "bound": r["bound"], "serial_step_s": r["serial_s"],
          "clip_denoise_s": steps * r["step_s"], "clip_denoise_serial_s": steps * r["serial_s"],
          **mfu_figures(model_flops / n, r["peak_tflops"], r["step_s"], r["serial_s"], None),
          "compile_s": compile_s, **_versions()}


def breakdown(row: dict) -> str:
  """The roofline's terms, one line each, for people (the JSON line is for tools)."""
  g = lambda b: f"{b / 1e12:.3f} TB"
  kinds = ", ".join(f"{k} {g(v['bytes'])}" for k, v in row["collectives"].items())
  return "\n".join([
      f"# {row['topology']} ({row['devices']} x {row['device_kind']}), mesh {row['mesh']}, "
      f"batch {row['global_batch']}, {row['attention']} attention; per device:",
      f"#   compute      {row['compute_s']:.3f} s  = XLA dots {row['hlo_flops_per_device'] / 1e12:.1f}"
      f" + kernel {row['kernel_flops_per_device'] / 1e12:.1f} TFLOP",
      f"#   HBM          {row['memory_s']:.3f} s  = XLA ops {g(row['hlo_bytes_per_device'])}"
      f" + kernel {g(row['kernel_bytes_per_device'])}",
      f"#   collectives  {row['ici_s'] or 0:.3f} s  = ICI {g(row['ici_bytes_per_device'])} ({kinds})",
      f"#   step {row['step_time_s']:.3f} s ({row['bound']}-bound; no overlap: {row['serial_step_s']:.3f} s)"
      f", model {row['model_flops_per_device'] / 1e12:.1f} TFLOP ({row['references_per_example']:.2f}"
      f" of {row['reference_slots']} reference slots valid): MFU upper bound "
      f"{row['mfu_upper_bound']:.1%}, no overlap {row['mfu_no_overlap']:.1%}, calibrated "
      + (f"{row['mfu_calibrated']:.1%} (x {row['calibration']['roofline_over_measured']:.2f}, "
         f"{row['calibration']['source']})" if row["calibration"] else "— (no calibration row)"),
      f"#   memory {row['peak_bytes'] / 2**30:.1f} / {row['hbm_bytes'] / 2**30:.0f} GiB: "
      f"{'fits' if row['fits'] else 'DOES NOT FIT'}; compile {row['compile_s']:.0f} s"])


def calibration_breakdown(row: dict) -> str:
  return (f"# calibration: {row['source']} ({row['measured']}) measured {row['measured_step_s']:.3f} s"
          f"; the same roofline at its chip's figures: compute {row['compute_s']:.3f} s, HBM "
          f"{row['memory_s']:.3f} s -> {row['roofline_step_s']:.3f} s ({row['bound']}-bound): "
          f"{row['roofline_over_measured']:.2f} of the roofline reached")


def _append(path: str, line: str) -> None:
  old = fs.read_text(path) if fs.exists(path) else ""
  fs.atomic_write_text(path, old + ("" if not old or old.endswith("\n") else "\n") + line + "\n")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    raise SystemExit("aot_compile: unset JAX_PLATFORMS=cpu; compiling for TPU needs the libtpu plugin")
  if _APPEND.value and not _APPEND.value.endswith(".jsonl"):
    raise app.UsageError(f"--append {_APPEND.value}: expected a .jsonl file")
  planning = _CONFIG.value is not None or _TOPOLOGY.value is not None
  if not _CALIBRATE.value or planning:
    for name, value in (("config", _CONFIG.value), ("topology", _TOPOLOGY.value)):
      if value is None:
        raise app.UsageError(f"--{name} is required (unless --calibrate alone)")
  command = "python " + shlex.join(["launch/aot_compile.py"] + sys.argv[1:])
  calibration = None
  if _CALIBRATE.value:
    calibration = {"command": command, "date": datetime.date.today().isoformat(),
                   **calibrate(_MEASURED.value, None if planning else _DUMP_HLO.value)}
    print(calibration_breakdown(calibration), flush=True)
    print(json.dumps(calibration), flush=True)
    if _APPEND.value:
      _append(_APPEND.value, json.dumps(calibration))
  if not planning:
    return
  row = {"kind": "AOT projection (deviceless compile)", "command": command,
         "date": datetime.date.today().isoformat()}
  if _PROGRAM.value == "generate":
    row.update(plan_generate(_CONFIG.value, _TOPOLOGY.value, _NUM_SLICES.value))
    print(f"# denoising step on {row['topology']} ({row['cfg_batch']} x {row['video_tokens']} "
          f"video tokens, {row['solver']}, cfg {row['cfg']}): {row['step_time_s']:.4f} s "
          f"({row['bound']}-bound; no overlap {row['serial_step_s']:.4f} s), MFU upper bound "
          f"{row['mfu_upper_bound']:.1%}; {row['steps_per_clip']} steps = "
          f"{row['clip_denoise_s']:.3f} s per clip ({row['forward_passes_per_clip']} passes); "
          f"memory {row['peak_bytes'] / 2**30:.1f} / {row['hbm_bytes'] / 2**30:.0f} GiB: "
          f"{'fits' if row['fits'] else 'DOES NOT FIT'}", flush=True)
  elif _PROGRAM.value == "distill":  # memory and compile time only: no roofline to calibrate
    row.update(plan_distill(_CONFIG.value, _TOPOLOGY.value, _NUM_SLICES.value))
    print(f"# distillation step on {row['topology']}: memory {row['peak_bytes'] / 2**30:.1f} / "
          f"{row['hbm_bytes'] / 2**30:.0f} GiB per device: "
          f"{'fits' if row['fits'] else 'DOES NOT FIT'}; compile {row['compile_s']:.0f} s",
          flush=True)
  else:
    if calibration is None:
      path = _CALIBRATION.value
      if not os.path.isabs(path) and not fs.is_remote(path) and not fs.exists(path):
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
      calibration = newest_calibration(path)
    row.update(plan(_CONFIG.value, _TOPOLOGY.value, _NUM_SLICES.value, _DUMP_HLO.value,
                    calibration))
    print(breakdown(row), flush=True)
  line = json.dumps(row)
  print(line, flush=True)
  if _APPEND.value:
    _append(_APPEND.value, line)


if __name__ == "__main__":
  cli.run_absl(main)
