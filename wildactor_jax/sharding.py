"""Logical axis names -> mesh axes, and the device mesh, both driven by the config.

Parameters and activations carry logical names ("embed", "mlp", "heads", "batch", "length", ...);
`config.mesh.rules` maps each to zero or more of the mesh axes ("data", "fsdp", "context",
"tensor"), as maxdiffusion does. A mesh axis is used at most once per array (later rules yield).
"""
from __future__ import annotations

import contextlib
import math
import threading
from typing import Iterable, Sequence

import jax
from jax.experimental import mesh_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "context", "tensor")

# Sensible defaults: batch over data+fsdp, weights FSDP over "fsdp" and Megatron-style over
# "tensor", sequence over "context".
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", "context"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("qkv", "tensor"),
    ("lora_rank", None),
    ("vocab", "tensor"),
    ("layers", None),
)

_state = threading.local()


def create_mesh(shape: Sequence[int], axis_names: Sequence[str] = MESH_AXES,
                devices=None) -> Mesh:
  """A mesh of `shape` (one entry may be -1: all remaining devices) over `devices`."""
  devices = list(jax.devices() if devices is None else devices)
  shape = list(shape)
  if len(shape) != len(axis_names):
    raise ValueError(f"mesh shape {shape} does not match axes {tuple(axis_names)}")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"mesh shape {shape}: {len(devices)} devices are not divisible by {known}")
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) != len(devices):
    raise ValueError(f"mesh shape {shape} needs {math.prod(shape)} devices, found {len(devices)}")
  try:
    dev = mesh_utils.create_device_mesh(shape, devices)
  except Exception:  # CPU / odd topologies: plain reshape keeps the order
    dev = np.asarray(devices).reshape(shape)
  return Mesh(dev, tuple(axis_names))


def logical_to_spec(axes: Iterable[str | None], rules) -> P:
  """Maps logical names to a PartitionSpec; unknown names and reused mesh axes are replicated."""
  table = {}
  for name, mesh_axes in rules:
    table.setdefault(name, mesh_axes)
  used: set[str] = set()
  spec = []
  for name in axes:
    target = table.get(name) if name is not None else None
    if target is None:
      spec.append(None)
      continue
    target = (target,) if isinstance(target, str) else tuple(target)
    target = tuple(a for a in target if a not in used)
    used.update(target)
    spec.append(None if not target else (target[0] if len(target) == 1 else target))
  return P(*spec)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh | None, rules):
  """Within this context, `constrain` pins activations to the mesh by their logical names."""
  previous = getattr(_state, "value", None)
  _state.value = (mesh, tuple(rules)) if mesh is not None else None
  try:
    yield
  finally:
    _state.value = previous


def active() -> tuple[Mesh, tuple] | None:
  """(mesh, rules) of the enclosing `activation_sharding`, or None outside one."""
  return getattr(_state, "value", None)


def platform(mesh: Mesh | None = None) -> str:
  """The platform ("tpu", "gpu", "cpu") a program on `mesh` compiles for: the mesh's devices (a
  deviceless TPU topology in AOT compiles), else the default backend."""
  abstract = getattr(mesh, "abstract_device", None)
  if abstract is not None:
    return abstract.platform
  try:
    return mesh.devices.flat[0].platform
  except (AttributeError, ValueError, TypeError):  # no mesh, or an AbstractMesh without one
    return jax.default_backend()


def axes_of(entry) -> tuple[str, ...]:
  """The mesh axes of one PartitionSpec entry (None, a name, or a tuple of names)."""
  return () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))


def fit_spec(spec: P, shape: Sequence[int], mesh) -> P:
  """`spec` with, per dimension, trailing mesh axes dropped until their product divides the size,
  so it is a valid shard_map spec for an array of `shape` (dropped axes replicate that dim).
  mesh: a Mesh, or a mapping of axis sizes (analytic cost models)."""
  sizes = getattr(mesh, "shape", mesh)
  out = []
  for entry, size in zip(tuple(spec) + (None,) * (len(shape) - len(spec)), shape):
    axes = axes_of(entry)
    while axes and size % math.prod(sizes[a] for a in axes):
      axes = axes[:-1]
    out.append(None if not axes else (axes[0] if len(axes) == 1 else axes))
  return P(*out)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """with_sharding_constraint by logical names; a no-op outside `activation_sharding`."""
  current = getattr(_state, "value", None)
  if current is None:
    return x
  mesh, rules = current
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(axes, rules)))


def param_shardings(abstract_state, mesh: Mesh, rules):
  """NamedShardings for an nnx.State of Variables with `out_sharding` logical names."""
  from flax import nnx

  def one(v):
    names = v.get_metadata().get("out_sharding") if isinstance(v, nnx.Variable) else None
    spec = logical_to_spec(names, rules) if names else P()
    return NamedSharding(mesh, spec)

  return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
