"""The ENCODED training record: one clip's latents, text embeddings and references as bytes.

Written by `wildactor_jax.encode`, read by `wildactor_jax.input.records_source`. No TensorFlow and
no pickle: a record is

  b"WAREC001" | uint32 little-endian header length | header (UTF-8 JSON) | zero padding to a
  64-byte boundary | array buffers, each starting on a 64-byte boundary

and the header maps every field to either {"dtype", "shape", "offset", "nbytes"} (an array) or
{"str": value} (a string). Arrays are C-ordered and little-endian; bfloat16 is supported through
ml_dtypes. Deserialising is zero-copy (`np.frombuffer` views of the input bytes, read-only).

Fields (R = number of references in the record, S = text length kept, z = latent channels):
  video_latents  (T', H', W', z)  float16/bfloat16/float32  VAE latents of the clip (normalised)
  text_embeds    (S, D)           float16/bfloat16/float32  UMT5 embeddings of the prompt; the
                                  encode job keeps only the valid tokens (S = mask.sum()); the
                                  pipeline pads back to its text length with zeros, as Wan does
  text_mask      (S,)             bool                      True for real tokens
  ref_latents    (R, H', W', z)   same dtype as video       one latent frame per reference,
                                  encoded at the video's resolution
  ref_type       (R,)             int8                      0 face, 1 body (three-view = body)
  ref_yaw        (R,)             float32                   reference yaw in degrees
  ref_view       (R,)             int8                      index into VIEWS
  ref_visibility (R,)             float32, optional         the row's `visibility` in [0, 1]
                                  (absent in records written before it existed)
  person_mask    (T', H', W')     uint8, optional           1 on the latent tokens the person's
                                  body box covers (`encode --person_boxes`, `person_mask`);
                                  absent: no boxes were given
  actor_id, prompt, key           str                       identity, caption, source row key
"""
from __future__ import annotations

import json
import struct
from typing import Any, Mapping

import ml_dtypes
import numpy as np

MAGIC = b"WAREC001"
ALIGN = 64
VIEWS = ("front", "left", "right", "side", "back", "up", "down", "canonical")
REF_TYPES = {"face": 0, "body": 1, "three_view": 1}
ARRAY_FIELDS = ("video_latents", "text_embeds", "text_mask", "ref_latents", "ref_type", "ref_yaw",
                "ref_view")
STRING_FIELDS = ("actor_id", "prompt", "key")
OPTIONAL_REF_FIELDS = ("ref_visibility",)
_FLOAT_DTYPES = ("float16", "bfloat16", "float32")


class RecordError(ValueError):
  """A record that cannot be decoded or breaks the field contract."""


def _dtype(name: str) -> np.dtype:
  if name == "bfloat16":
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(name)


def _pad(n: int) -> int:
  return (-n) % ALIGN


def validate(example: Mapping[str, Any]) -> None:
  """Raises RecordError naming the field and the expectation when the contract is broken."""
  missing = [f for f in ARRAY_FIELDS + STRING_FIELDS if f not in example]
  if missing:
    raise RecordError(f"record: missing fields {missing}")
  for name in STRING_FIELDS:
    if not isinstance(example[name], str):
      raise RecordError(f"record field {name}: expected str, got {type(example[name]).__name__}")
  arr = {name: np.asarray(example[name]) for name in ARRAY_FIELDS}
  video, refs = arr["video_latents"], arr["ref_latents"]
  if video.ndim != 4 or video.dtype.name not in _FLOAT_DTYPES:
    raise RecordError(f"record field video_latents: expected (T, H, W, z) float, got "
                      f"{video.shape} {video.dtype}")
  if refs.ndim != 4 or refs.shape[1:] != video.shape[1:] or refs.dtype != video.dtype:
    raise RecordError(f"record field ref_latents: expected (R, {', '.join(map(str, video.shape[1:]))})"
                      f" {video.dtype}, got {refs.shape} {refs.dtype}")
  r = refs.shape[0]
  for name in ("ref_type", "ref_yaw", "ref_view") + OPTIONAL_REF_FIELDS:
    if name in example and np.shape(example[name]) != (r,):
      raise RecordError(f"record field {name}: expected shape ({r},), got {np.shape(example[name])}")
  if "person_mask" in example and np.shape(example["person_mask"]) != video.shape[:3]:
    raise RecordError(f"record field person_mask: expected shape {video.shape[:3]}, got "
                      f"{np.shape(example['person_mask'])}")
  text, mask = arr["text_embeds"], arr["text_mask"]
  if text.ndim != 2 or mask.shape != text.shape[:1]:
    raise RecordError(f"record fields text_embeds/text_mask: expected (S, D) and (S,), got "
                      f"{text.shape} and {mask.shape}")


def serialize(example: Mapping[str, Any]) -> bytes:
  """Record bytes for one example (the fields in the module docstring; extra fields are kept)."""
  validate(example)
  header, buffers, offset = {}, [], 0
  for name, value in example.items():
    if isinstance(value, str):
      header[name] = {"str": value}
      continue
    arr = np.ascontiguousarray(value)
    if arr.dtype.byteorder == ">":
      arr = arr.astype(arr.dtype.newbyteorder("<"))
    if arr.dtype.kind not in "biuf" and arr.dtype != ml_dtypes.bfloat16:
      raise RecordError(f"record field {name}: unsupported dtype {arr.dtype}")
    data = arr.tobytes()
    header[name] = {"dtype": arr.dtype.name, "shape": list(arr.shape), "offset": offset,
                    "nbytes": len(data)}
    buffers.append(data + b"\0" * _pad(len(data)))
    offset += len(data) + _pad(len(data))
  head = json.dumps(header, separators=(",", ":")).encode()
  prefix = MAGIC + struct.pack("<I", len(head)) + head
  return prefix + b"\0" * _pad(len(prefix)) + b"".join(buffers)


def deserialize(data: bytes) -> dict[str, Any]:
  """The example dict back from record bytes; raises RecordError on anything malformed."""
  view = memoryview(data)
  if len(view) < len(MAGIC) + 4 or bytes(view[:len(MAGIC)]) != MAGIC:
    raise RecordError("record: bad magic (not a wildactor encoded record)")
  (head_len,) = struct.unpack_from("<I", view, len(MAGIC))
  start = len(MAGIC) + 4
  try:
    header = json.loads(bytes(view[start:start + head_len]))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise RecordError(f"record: unreadable header ({e})") from None
  body = start + head_len + _pad(start + head_len)
  out = {}
  for name, spec in header.items():
    if "str" in spec:
      out[name] = spec["str"]
      continue
    dtype = _dtype(spec["dtype"])
    lo, n = body + spec["offset"], spec["nbytes"]
    count = int(np.prod(spec["shape"], dtype=np.int64))
    if lo + n > len(view) or count * dtype.itemsize != n:
      raise RecordError(f"record field {name}: truncated or inconsistent buffer")
    out[name] = np.frombuffer(view, dtype=dtype, count=count, offset=lo).reshape(spec["shape"])
  validate(out)
  return out
