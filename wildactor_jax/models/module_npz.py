"""Small NNX modules as one .npz file: weights by their nnx path plus a JSON metadata record.

For the models that live in a single small file (the evaluation's embedder and probes, the demo's
learned video autoencoder), where an Orbax checkpoint folder would be overkill:

    save(net, "net.npz", meta={"config": {...}})    # atomic, local or gs://
    meta = read_meta("net.npz"); net = build_and_load(lambda: build(meta), "net.npz")

Weights are stored in float32, float16 or bfloat16 (`dtype`; bfloat16 as its uint16 bits, since
.npz has no bfloat16) and come back in the module's own parameter dtype.
"""
from __future__ import annotations

import io
import json
import zipfile
import zlib
from typing import Callable

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from wildactor_jax import fs

META = "__meta__"
DTYPES = ("float32", "float16", "bfloat16")
# What a truncated or damaged .npz raises, when opened or when a member is read (np.load is lazy).
_DAMAGED = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def _name(key) -> str:
  return "/".join(map(str, key))


def _stored(value, dtype: str) -> np.ndarray:
  if dtype == "bfloat16":
    return np.asarray(value, np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
  return np.asarray(value, np.float32).astype(dtype)


def _restored(value: np.ndarray, dtype: str) -> np.ndarray:
  if dtype == "bfloat16":
    return value.view(ml_dtypes.bfloat16).astype(np.float32)
  return value.astype(np.float32)


def save(net: nnx.Module, path: str, meta: dict, dtype: str = "float32") -> str:
  """Writes every nnx.Param of `net` (stored as `dtype`) and `meta` (JSON-able) to `path`
  atomically."""
  if dtype not in DTYPES:
    raise ValueError(f"dtype {dtype!r}: expected one of {DTYPES}")
  arrays = {_name(k): _stored(v[...], dtype)
            for k, v in nnx.to_flat_state(nnx.state(net, nnx.Param))}
  meta = dict(meta, __dtype__=dtype)
  buf = io.BytesIO()
  np.savez(buf, **{META: np.frombuffer(json.dumps(meta).encode(), np.uint8)}, **arrays)
  return fs.atomic_write_bytes(path, buf.getvalue())


def _open(path: str, what: str):
  try:
    data = np.load(io.BytesIO(fs.read_bytes(path)))
    meta = json.loads(bytes(data[META]).decode())
  except FileNotFoundError:
    raise ValueError(f"{path}: no such {what} file") from None
  except _DAMAGED as e:
    raise ValueError(f"{path}: expected {what} weights written by module_npz.save, got a "
                     f"damaged or foreign file ({e})") from None
  return data, meta


def read_meta(path: str, what: str = "weights") -> dict:
  return _open(path, what)[1]


def load_into(net: nnx.Module, path: str, what: str = "weights") -> nnx.Module:
  """Fills `net`'s parameters from `path`; a missing or mis-shaped weight is a one-line error.
  `net` may be abstract (`nnx.eval_shape`): its parameters need only a shape and a dtype."""
  data, meta = _open(path, what)
  dtype = meta.get("__dtype__", "float32")
  flat = []
  for k, v in nnx.to_flat_state(nnx.state(net, nnx.Param)):
    name, like = _name(k), v.get_value()
    try:
      stored = data[name] if name in data else None
    except _DAMAGED as e:
      raise ValueError(f"{path}: weight {name} is damaged ({e}); write the file again") from None
    if stored is None or stored.shape != like.shape:
      raise ValueError(f"{path}: weight {name} missing or of the wrong shape")
    flat.append((k, v.replace(jnp.asarray(_restored(stored, dtype), like.dtype))))
  nnx.update(net, nnx.from_flat_state(flat))
  return net


def build_and_load(build: Callable[[], nnx.Module], path: str, what: str = "weights"):
  """`build()` traced for shapes only, then filled from `path`: no random initialisation runs
  (compiling each initialiser cost a benchmark run about 17 s). The module must hold nothing
  but parameters (anything else would stay abstract): a one-line error otherwise."""
  net = nnx.eval_shape(build)
  others = [_name(k) for k, v in nnx.to_flat_state(nnx.state(net))
            if not isinstance(v, nnx.Param)]
  if others:
    raise ValueError(f"{path}: {what} holds state besides parameters ({', '.join(others[:3])}); "
                     "build it concretely and use load_into")
  return load_into(net, path, what)
