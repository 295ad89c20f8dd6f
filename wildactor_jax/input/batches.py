"""What the trainer calls: the configured source's per-host batches and their global form.

  it = batches.create_source(config, "train")   # records_source or random_source, per process
  batch = batches.to_global(next(it), mesh, rules)

The batch itself (keys, dtypes, shapes) is `schema`; the sharding of its leading axis comes from
the logical "batch" axis of the sharding rules.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding

from wildactor_jax.input import random_source, records_source
from wildactor_jax.input.schema import DEVICE_DTYPES, FLOAT_KEYS, example_shapes
from wildactor_jax.sharding import logical_to_spec

SOURCES = ("records", "random")


def batch_sharding(mesh, rules, ndim: int) -> NamedSharding:
  """Leading batch axis over the mesh's batch axes (data + fsdp by the default rules)."""
  return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules))


def abstract_batch(config, mesh, rules) -> dict[str, jax.ShapeDtypeStruct]:
  """The global device batch as sharded ShapeDtypeStructs (ahead-of-time compilation)."""
  b = config.data.global_batch_size
  shapes = example_shapes(config)
  return {k: jax.ShapeDtypeStruct((b,) + shapes[k], dtype,
                                  sharding=batch_sharding(mesh, rules, 1 + len(shapes[k])))
          for k, dtype in DEVICE_DTYPES.items()}


def check_batch_divides_mesh(config, mesh, rules) -> None:
  spec = logical_to_spec(("batch",), rules)[0]
  axes = () if spec is None else ((spec,) if isinstance(spec, str) else tuple(spec))
  ways = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
  if config.data.global_batch_size % ways:
    raise ValueError(f"config.data.global_batch_size {config.data.global_batch_size} must be a "
                     f"multiple of the {ways} batch shards (mesh axes {axes})")


def to_global(batch: dict, mesh, rules) -> dict[str, jax.Array]:
  """Per-host numpy batches -> global jax.Arrays of the DEVICE_DTYPES keys, sharded over the
  batch axes (the host-only keys stay behind)."""
  out = {}
  for key, dtype in DEVICE_DTYPES.items():
    if key not in batch:
      raise KeyError(f"batch is missing {key!r} (has {sorted(batch)})")
    local = np.asarray(batch[key], None if key in FLOAT_KEYS else dtype)
    out[key] = jax.make_array_from_process_local_data(batch_sharding(mesh, rules, local.ndim), local)
  return out


def null_text(config) -> np.ndarray:
  """(S, D) float32: the empty prompt's states, zero-padded to the text length. Read from
  `null_text.npz` beside the encoded records (written by the encode job); zeros for the random
  source, whose prompts are random too."""
  import io
  from wildactor_jax import fs
  from wildactor_jax.input.schema import text_length
  s, d = text_length(config), int(config.model.text_dim)
  out = np.zeros((s, d), np.float32)
  if config.data.get("source", "records") == "random":
    return out
  path = fs.join(config.data.records, "null_text.npz")
  if not fs.exists(path):
    raise ValueError(f"{path}: missing (train.text_dropout needs the empty prompt's states); "
                     "re-run `python -m wildactor_jax.encode` into this folder")
  states = np.load(io.BytesIO(fs.read_bytes(path)))["text_embeds"][:s]
  if states.shape[1] != d:
    raise ValueError(f"{path}: text states of width {states.shape[1]}, model.text_dim is {d}")
  out[:len(states)] = states
  return out


def create_source(config, split: str):
  """The configured source's iterator for this process: `records` (the Grain pipeline over
  encoded records) or `random` (random_source: tiny configs, tests and benchmarks)."""
  source = config.data.get("source", "records")
  if source not in SOURCES:
    raise ValueError(f"config.data.source {source!r}: expected one of {SOURCES}")
  kw = dict(split=split, process_index=jax.process_index(), process_count=jax.process_count())
  if source == "random":
    return random_source.create_dataset(config, **kw)
  if not config.data.get("records"):
    raise ValueError("config.data.records is empty: point it at encoded records or set "
                     "config.data.source=random for synthetic batches")
  return records_source.create_dataset(config.data, **kw)
