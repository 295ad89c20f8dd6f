"""Ahead-of-time planning: compile the real train step for a TPU slice on a CPU machine.

    python launch/aot_compile.py --config configs/wildactor_wan22_5b.py:v6e-64 --topology v6e-64
    python launch/aot_compile.py --config configs/X.py --topology v5p-64 --num_slices 2

Needs the `libtpu` package (compile-only TPU devices, no TPU attached) and must not run with
JAX_PLATFORMS=cpu. Prints one JSON line: per-device memory from XLA's memory analysis and whether
it fits the chip's HBM, the analytic model FLOPs of a step, a roofline step time and the MFU it
implies, and the compile time. Nothing is allocated: inputs are sharded ShapeDtypeStructs.

Topology names follow Cloud TPU: v5p-N and v4-N count TensorCores (2 per chip, one jax device
per chip), v5e-N / v6e-N count chips. Roofline per device (collectives not modelled; for FSDP of
a 5B model the weight all-gathers are a few hundredths of a step):
    step_time = max(FLOPs / peak, HBM bytes accessed / HBM bandwidth)
FLOPs and bytes come from XLA's cost analysis of the compiled step (elementwise work included).
XLA counts a loop body once whatever its trip count, so:
  * the layer scan is extrapolated from 0- and 1-layer compiles: cost(L) = cost(0) + L x layer.
    The layer comes from compiles that also differentiate the input latents: the first layer's
    inputs do not depend on LoRA, so a lone layer would otherwise skip most of the backward the
    other L - 1 layers do;
  * these cost compiles run XLA attention as one dense call instead of a loop over query chunks
    (same FLOPs and logits traffic, no inner loop to mis-count);
  * full remat: in a one-layer compile XLA merges the recomputed forward with the first one, so
    the recomputation is added back: its FLOPs analytically (the model's forward), its bytes from
    0- and 1-layer compiles of the forward alone (a lower bound: that compile drops the last
    layer's reference tail, which nothing reads).
predicted_mfu = model FLOPs (analytic, wildactor_jax/flops.py) / (step_time x peak): an upper bound,
with no collective, host or idle time.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Compile-only devices touch no chip: let several planners (or test runs) load libtpu at once.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from absl import app, flags  # noqa: E402
from jax.experimental import mesh_utils, topologies  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from wildactor_jax.models import attention as attention_lib  # noqa: E402
from wildactor_jax.sharding import activation_sharding, create_mesh  # noqa: E402
from wildactor_jax import flops as flops_lib  # noqa: E402
from wildactor_jax.input import batches  # noqa: E402
from wildactor_jax.train_lib import state as state_lib, step as step_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "v5p-64, v6e-64, v5e-4, ... or v5p:2x4x4")
_NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "slices joined over DCN (the data axis)")

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


def compile_step(config, mesh, differentiate_inputs: bool = False):
  """Lowers and compiles the train step on `mesh` from abstract inputs; returns the Compiled."""
  rules, tx, schedule, setup, batch = _parts(config, mesh)
  step = step_lib.jit_train_step(
      step_lib.make_train_step(setup, tx, schedule, float(config.flow.shift), mesh, rules,
                               differentiate_inputs=differentiate_inputs),
      setup, batch, mesh, rules)
  return step.lower(setup.abstract_frozen, setup.abstract_train, batch).compile()


def compile_forward(config, mesh):
  """The loss alone, no gradient, on the same shardings: the forward that full remat runs a
  second time in the backward pass (a one-layer train step lets XLA merge it with the first)."""
  rules, _, _, setup, batch = _parts(config, mesh)

  def forward(frozen, lora, batch):
    with activation_sharding(mesh, rules):
      model = nnx.merge(setup.graphdef, frozen, lora)
      x0 = batch["video_latents"]
      noise = jax.random.normal(jax.random.key(0), x0.shape, jnp.float32)
      return step_lib.flow_loss(model, batch, jnp.full((x0.shape[0],), 0.5), noise)

  in_shardings = (setup.frozen_shardings, setup.train_shardings["lora"],
                  step_lib.batch_shardings(batch, mesh, rules))
  return jax.jit(forward, in_shardings=in_shardings).lower(
      setup.abstract_frozen, setup.abstract_train["lora"], batch).compile()


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0))}


@contextlib.contextmanager
def one_chunk_attention():
  """XLA attention as one dense call instead of a loop over query chunks: same FLOPs and logits
  traffic, but no inner loop for the cost analysis to count once. Only for the cost compiles;
  the memory analysis comes from the real, chunked step."""
  saved = attention_lib.QUERY_CHUNK
  attention_lib.QUERY_CHUNK = 1 << 30
  try:
    yield
  finally:
    attention_lib.QUERY_CHUNK = saved


def _with_layers(config, n: int):
  c = config.copy_and_resolve_references()
  c.model.num_layers = n
  return c


def plan(config, topology: str, num_slices: int) -> dict:
  name = topology_name(topology)
  devices = topologies.get_topology_desc(platform="tpu", topology_name=name,
                                         num_slices=num_slices).devices
  mesh = make_mesh(config, devices, num_slices)
  kind = devices[0].device_kind
  spec = flops_lib.chip_spec(kind)
  if spec is None:
    raise ValueError(f"device kind {kind!r}: no peak/HBM figures in wildactor_jax/flops.CHIPS")
  peak, hbm_gib, hbm_tbps = spec

  start = time.perf_counter()
  compiled = compile_step(config, mesh)
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  peak_bytes = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
                + mem.temp_size_in_bytes)
  # XLA costs a loop body once, whatever the trip count: the layer scan's cost is extrapolated
  # from 0- and 1-layer compiles, cost(L) = outside + L x layer, per device. `layer` comes from
  # compiles that also differentiate the inputs, so the lone layer does a middle layer's backward.
  layers = int(config.model.num_layers)
  with one_chunk_attention():
    outside = _cost(compile_step(_with_layers(config, 0), mesh))
    probe0, probe1 = (_cost(compile_step(_with_layers(config, n), mesh, differentiate_inputs=True))
                      for n in (0, 1))
    remat_cost = {"flops": 0.0, "bytes": 0.0}
    if config.model.remat == "full":
      fwd0, fwd1 = (_cost(compile_forward(_with_layers(config, n), mesh)) for n in (0, 1))
      remat_cost = {k: layers * (fwd1[k] - fwd0[k]) for k in fwd0}
  xla = {k: outside[k] + layers * (probe1[k] - probe0[k]) for k in outside}

  n = len(devices)
  model_flops = flops_lib.step_flops_for_config(config)
  recompute = model_flops.forward if config.model.remat == "full" else 0.0
  flops_per_device = xla["flops"] + recompute / n
  bytes_per_device = xla["bytes"] + remat_cost["bytes"]
  compute_s = flops_per_device / (peak * 1e12)
  memory_s = bytes_per_device / (hbm_tbps * 1e12)
  step_s = max(compute_s, memory_s)
  return {
      "topology": topology, "topology_name": name, "num_slices": num_slices, "devices": n,
      "device_kind": kind, "mesh": {k: int(v) for k, v in mesh.shape.items()},
      "model": config.model.get("name", "?"), "global_batch": int(config.data.global_batch_size),
      "tokens_per_step": flops_lib.tokens_per_step(config),
      "remat": config.model.remat, "attention": config.model.attention,
      "argument_bytes": int(mem.argument_size_in_bytes), "output_bytes": int(mem.output_size_in_bytes),
      "alias_bytes": int(mem.alias_size_in_bytes), "temp_bytes": int(mem.temp_size_in_bytes),
      "peak_bytes": int(peak_bytes), "hbm_bytes": int(hbm_gib * 2**30),
      "fits": bool(peak_bytes <= hbm_gib * 2**30),
      "flops_per_step": model_flops.train,
      "model_flops_per_device": model_flops.train / n,
      "xla_flops_per_device": xla["flops"], "remat_flops_per_device": recompute / n,
      "xla_bytes_per_device": xla["bytes"], "xla_remat_bytes_per_device": remat_cost["bytes"],
      "compute_s": compute_s, "memory_s": memory_s, "step_time_s": step_s,
      "predicted_mfu": model_flops.train / n / (peak * 1e12) / step_s,
      "compile_s": compile_s,
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    raise SystemExit("aot_compile: unset JAX_PLATFORMS=cpu; compiling for TPU needs the libtpu plugin")
  print(json.dumps(plan(_CONFIG.value, _TOPOLOGY.value, _NUM_SLICES.value)), flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "topology"])
  app.run(main)
