"""Diagnostics that need no sampling: do the references matter to the trained model?

- flow loss on held-out batches at fixed flow times with (a) each example's true references,
  (b) references shuffled across the batch (example i gets example i+1's), (c) none. If the
  model reads identity from its references, (a) < (b): wrong references hurt, and (a) <= (c).
- the attention mass video queries put on reference keys, per layer: the softmax probability of
  the [video ; references] self-attention that lands on the valid reference keys, averaged over
  video queries, heads and examples.

The loss is `train_lib.step.flow_loss` itself (the training objective); attention mass is
computed outside the model from the blocks' own q/k projections, layer by layer, while the
same blocks advance the hidden states, so no model code changes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wildactor_jax.input.schema import DEVICE_DTYPES
from wildactor_jax.models import rope as rope_lib
from wildactor_jax.models.block import Stream, modulated_norm
from wildactor_jax.models.transformer import References, patchify
from wildactor_jax.train_lib import flow
from wildactor_jax.train_lib.step import flow_loss

REFERENCE_KEYS = ("ref_latents", "ref_type", "ref_mask")
VARIANTS = ("true", "shuffled", "none")


def reference_variant(batch: dict, variant: str) -> dict:
  """The batch with its references as they are, rolled by one example, or all masked out."""
  if variant == "true":
    return batch
  if variant == "shuffled":
    if len(batch["ref_mask"]) < 2:
      raise ValueError("shuffled references need a batch of at least 2 examples")
    return dict(batch, **{k: np.roll(np.asarray(batch[k]), 1, axis=0) for k in REFERENCE_KEYS})
  if variant == "none":
    return dict(batch, ref_mask=np.zeros_like(np.asarray(batch["ref_mask"])))
  raise ValueError(f"reference variant {variant!r}: expected one of {VARIANTS}")


_jit_loss = nnx.jit(flow_loss)


def flow_losses(model, batches, times=(0.5, 0.9), seed: int = 0) -> dict:
  """{variant: {"t=0.5": mean loss, ...}} over `batches` (dicts of numpy arrays with the
  schema's device keys), noise fixed by (seed, batch index, time index)."""
  sums = {v: np.zeros(len(times)) for v in VARIANTS}
  n = 0
  for b, batch in enumerate(batches):
    x0 = np.asarray(batch["video_latents"])
    for i, t in enumerate(times):
      noise = jax.random.normal(jax.random.fold_in(jax.random.key(seed), b * 1000 + i), x0.shape)
      tt = jnp.full((x0.shape[0],), float(t), jnp.float32)
      for v in VARIANTS:
        dev = {k: jnp.asarray(a) for k, a in reference_variant(batch, v).items()
               if k in DEVICE_DTYPES}
        sums[v][i] += float(_jit_loss(model, dev, tt, noise))
    n += 1
  if n == 0:
    raise ValueError("no batches to evaluate (is the split smaller than one batch?)")
  return {v: {f"t={t:g}": float(s[i] / n) for i, t in enumerate(times)} for v, s in sums.items()}


def _reference_mass(q, k_video, k_ref, ref_lengths):
  """(B,) mean softmax mass on the valid reference keys for queries q over [video ; refs]."""
  scale = q.shape[-1] ** -0.5
  q = q.astype(jnp.float32) * scale
  lv = jnp.einsum("bqnd,bknd->bnqk", q, k_video.astype(jnp.float32))
  lr = jnp.einsum("bqnd,bknd->bnqk", q, k_ref.astype(jnp.float32))
  valid = jnp.arange(k_ref.shape[1])[None, :] < ref_lengths[:, None]
  lr = jnp.where(valid[:, None, None, :], lr, -jnp.inf)
  lse_ref = jax.nn.logsumexp(lr, axis=-1)
  lse_all = jnp.logaddexp(jax.nn.logsumexp(lv, axis=-1), lse_ref)
  return jnp.exp(lse_ref - lse_all).mean(axis=(1, 2))


@nnx.jit
def reference_attention_mass(model, latents, timesteps, text_embeds, text_lengths,
                             references: References):
  """(L, B): per layer and example, the attention mass video queries put on reference keys
  (0 for an example without valid references). Mirrors WanTransformer.__call__'s video and
  reference streams and advances them with the blocks themselves."""
  cfg = model.cfg
  b, t, h, w, _ = latents.shape
  grid = (t // cfg.patch_size[0], h // cfg.patch_size[1], w // cfg.patch_size[2])
  x = model.patch_embedding(patchify(latents, cfg.patch_size))
  pos = jnp.asarray(rope_lib.video_positions(*grid))[None]
  cos, sin = rope_lib.rope_cos_sin(pos, cfg.head_dim, cfg.rope_max_seq_len, cfg.rope_theta)
  _, mod = model.time_conditioning(model._grouped_timesteps(timesteps, b, grid))
  video = Stream(x, mod, cos, sin)
  context = model.text_embedder(text_embeds)
  ref, ref_lengths = model._reference_stream(references, grid)

  def body(block, carry, _):
    vx, rx = carry
    s, r = video._replace(x=vx), ref._replace(x=rx)
    shift, scale = block._mods(s)[:2]
    hidden = modulated_norm(vx, shift, scale, cfg.eps)
    q, k, _ = block.attn1.qkv(hidden, hidden, s.cos, s.sin, use_lora=not cfg.aipa)
    _, k_ref, _ = block.reference_qkv(r)
    mass = _reference_mass(q, k, k_ref, ref_lengths)
    vx, rx, _ = block(s, context, text_lengths, r, ref_lengths, None)
    return (vx, rx), mass

  _, masses = model._scan_blocks(body, (x, ref.x), None)
  return masses


def attention_mass(model, batches, t: float = 0.5, seed: int = 0) -> list[float]:
  """Per layer: mean reference attention mass over the examples that have references, on the
  noisy latents at flow time t."""
  total, count = None, 0
  for b, batch in enumerate(batches):
    x0 = jnp.asarray(batch["video_latents"], jnp.float32)
    noise = jax.random.normal(jax.random.fold_in(jax.random.key(seed), b), x0.shape)
    tt = jnp.full((x0.shape[0],), float(t), jnp.float32)
    t_frames = flow.frame_timesteps(tt, x0.shape[1], jnp.asarray(batch["clean_frames"]))
    x_t = flow.interpolate(x0, noise, t_frames).astype(model.cfg.jnp_dtype)
    lengths = jnp.maximum(jnp.sum(jnp.asarray(batch["text_mask"]), 1).astype(jnp.int32), 1)
    refs = References(jnp.asarray(batch["ref_latents"]).astype(model.cfg.jnp_dtype),
                      jnp.asarray(batch["ref_type"]), jnp.asarray(batch["ref_mask"]))
    mass = np.asarray(reference_attention_mass(
        model, x_t, flow.model_timesteps(t_frames), jnp.asarray(batch["text_embeds"]),
        lengths, refs))
    has = np.asarray(batch["ref_mask"]).any(axis=1)
    part = mass[:, has].sum(axis=1)
    total = part if total is None else total + part
    count += int(has.sum())
  if not count:
    raise ValueError("no example with references: attention mass is undefined")
  return [float(v) for v in total / count]


def record_batches(config, records: str, split: str, batch_size: int = 4,
                   max_batches: int = 8, seed: int = 0) -> list[dict]:
  """Up to max_batches batches of the split's encoded records in file order, every example with
  the model's full reference count (task vc, fixed counts), references chosen under `seed`."""
  import itertools
  import grain
  from ml_collections import ConfigDict
  from wildactor_jax.input import records_source
  n = len(grain.sources.ArrayRecordDataSource(records_source.split_files(records, split)))
  data = ConfigDict(config.data.to_dict())
  data.update(records=records, shuffle=False, num_epochs=1, task_probs={"vc": 1.0},
              random_counts=False, num_faces=int(data.get("max_faces", 5)),
              num_bodies=int(data.get("max_bodies", 5)), seed=seed,
              global_batch_size=max(2, min(batch_size, n)))
  if n < 2:
    raise ValueError(f"{records}: the {split} split has {n} record(s); the diagnostics need 2")
  return [dict(b) for b in itertools.islice(records_source.create_dataset(data, split),
                                            max_batches)]


def run(model, config, records: str, split: str, times=(0.5, 0.9), batch_size: int = 4,
        max_batches: int = 8, seed: int = 0) -> dict:
  """Both diagnostics on a restored model: {"flow_loss": {...}, "attention_mass": [...], ...}."""
  batches = record_batches(config, records, split, batch_size, max_batches, seed)
  return {"split": split, "examples": int(sum(len(b["ref_mask"]) for b in batches)),
          "flow_loss": flow_losses(model, batches, times, seed),
          "attention_mass_per_layer": attention_mass(model, batches, times[0], seed)}
