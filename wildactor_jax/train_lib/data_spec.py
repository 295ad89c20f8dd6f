"""What the trainer feeds the model: batch keys, per-example shapes and dtypes from the config,
global (sharded) batches from per-host numpy batches, and the source selected by the config.

The shapes follow the data pipeline's encoded records (wildactor_jax.input_pipeline, which
`create_source` uses for config.data.source = "records"): VAE latents (T, H, W, C) with
T = (frames - 1) / 4 + 1 and H, W = height, width / 16 for Wan2.2 (the VAE geometry of the
backbone), one latent frame per reference at the video's resolution, and text-encoder states
(S, text_dim) with a validity mask.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from wildactor_jax import config_lib
from wildactor_jax.sharding import logical_to_spec

TASKS = ("t2v", "i2v", "vc")
SOURCES = ("records", "random")
# Latents and text states arrive in the records' dtype (bfloat16 by default) and go to the
# device as they are: the step upcasts where it needs float32.
FLOAT_DTYPE = jnp.bfloat16
DTYPES = {"video_latents": FLOAT_DTYPE, "text_embeds": FLOAT_DTYPE, "text_mask": np.bool_,
          "ref_latents": FLOAT_DTYPE, "ref_type": np.int32, "ref_mask": np.bool_,
          "first_frame_clean": np.bool_, "task": np.int32}
FLOAT_KEYS = ("video_latents", "text_embeds", "ref_latents")


def latent_grid(config) -> tuple[int, int, int, int]:
  """(T, H, W, C) of a clip's latents for config.data's frames/height/width."""
  tf, sf, z = config_lib.vae_geometry(config)
  d = config.data
  if (d.frames - 1) % tf or d.height % sf or d.width % sf:
    raise ValueError(f"config.data frames/height/width {d.frames}/{d.height}/{d.width}: expected "
                     f"frames = 1 + {tf} k and height, width multiples of {sf}")
  return (d.frames - 1) // tf + 1, d.height // sf, d.width // sf, z


def example_shapes(config) -> dict[str, tuple[int, ...]]:
  t, h, w, c = latent_grid(config)
  s = int(config.data.get("text_len", config.text_encoder.max_length))
  r = int(config.data.r_max)
  return {"video_latents": (t, h, w, c), "text_embeds": (s, config.model.text_dim),
          "text_mask": (s,), "ref_latents": (r, h, w, c), "ref_type": (r,), "ref_mask": (r,),
          "first_frame_clean": (), "task": ()}


def batch_sharding(mesh, rules, ndim: int) -> NamedSharding:
  """Leading batch axis over the mesh's batch axes (data + fsdp by the default rules)."""
  return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules))


def abstract_batch(config, mesh, rules) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch as sharded ShapeDtypeStructs (ahead-of-time compilation, shardings)."""
  b = config.data.global_batch_size
  return {k: jax.ShapeDtypeStruct((b,) + s, DTYPES[k], sharding=batch_sharding(mesh, rules, 1 + len(s)))
          for k, s in example_shapes(config).items()}


def check_batch_divides_mesh(config, mesh, rules) -> None:
  spec = logical_to_spec(("batch",), rules)[0]
  axes = () if spec is None else ((spec,) if isinstance(spec, str) else tuple(spec))
  ways = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
  if config.data.global_batch_size % ways:
    raise ValueError(f"config.data.global_batch_size {config.data.global_batch_size} must be a "
                     f"multiple of the {ways} batch shards (mesh axes {axes})")


def to_global(batch: dict, mesh, rules) -> dict[str, jax.Array]:
  """Per-host numpy batches -> global jax.Arrays sharded over the batch axes."""
  out = {}
  for key in DTYPES:  # keys the step does not use (ref_yaw, record_index) stay on the host
    if key not in batch:
      raise KeyError(f"batch is missing {key!r} (has {sorted(batch)})")
    local = np.asarray(batch[key], None if key in FLOAT_KEYS else DTYPES[key])
    out[key] = jax.make_array_from_process_local_data(batch_sharding(mesh, rules, local.ndim), local)
  return out


def create_source(config, split: str):
  """The configured source's iterator for this process: `records` (the Grain data pipeline over
  encoded records) or `random` (synthetic_source, tiny configs, tests and benchmarks)."""
  source = config.data.get("source", "records")
  if source not in SOURCES:
    raise ValueError(f"config.data.source {source!r}: expected one of {SOURCES}")
  kw = dict(split=split, process_index=jax.process_index(), process_count=jax.process_count())
  if source == "random":
    from wildactor_jax.train_lib import synthetic_source
    return synthetic_source.create_dataset(config, **kw)
  if not config.data.get("records"):
    raise ValueError("config.data.records is empty: point it at encoded records or set "
                     "config.data.source=random for synthetic batches")
  from wildactor_jax import input_pipeline  # the Grain records pipeline
  return input_pipeline.create_dataset(config.data, **kw)
