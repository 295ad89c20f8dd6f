"""The splash kernel's analytic cost (flops.py): the FLOPs of its matmuls on padded tiles (checked
against XLA's own count of the same attention), the HBM traffic its tiling implies, and
per-device shares that add up to the whole step."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import pytest

from wildactor_jax import flops
from wildactor_jax.models import attention as attn
from wildactor_jax.models.config import ModelConfig

CFG = ModelConfig(dim=1024, ffn_dim=2048, num_heads=8, num_layers=2, in_channels=16,
                  out_channels=16, dtype="bfloat16", splash_block_sizes=(512, 512, 512))


def test_call_flops_are_the_matmuls_on_padded_tiles():
  fwd = flops.splash_call_cost(2, 1000, 700, 4, 128, (512, 512, 512))
  # 1000 queries pad to 1024 (two 512 tiles); 700 keys to 1024.
  assert fwd.flops == 4 * 2 * 4 * 1024 * 1024 * 128
  assert fwd.transcendentals == 2 * 4 * 1024 * 1024
  train = flops.splash_call_cost(2, 1000, 700, 4, 128, (512, 512, 512), train=True)
  assert train.flops == 14 / 4 * fwd.flops  # fused backward: 5 more matmuls
  assert flops.splash_call_cost(2, 1024, 1024, 4, 128, (512, 512, 512)) == fwd


def test_bigger_query_tiles_read_keys_and_values_fewer_times():
  cost = lambda bq: flops.splash_call_cost(1, 4096, 4096, 1, 128, (bq, 512, 512)).hbm_bytes
  kv = 2 * 4096 * 128 * 2  # K and V in bfloat16, read once per query tile
  seg = 8 * 4096 * 4       # key segment ids, read once per query tile
  assert cost(512) - cost(1024) == (8 - 4) * (kv + seg)
  assert cost(1024) > 2 * kv  # still at least one pass over K, V plus Q and O


def xla_flops(fn, *args) -> float:
  """XLA's own count (cost analysis of the compiled CPU program): an independent tally."""
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]


def xla_attention(q, k, v, lengths=None):
  return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths,
                                      implementation="xla")


def test_call_flops_match_xlas_count_of_the_same_attention():
  """On tile multiples (no padding), the kernel's matmul FLOPs are what XLA counts for the same
  attention computed by XLA, forward and forward + backward; XLA also counts the softmax's
  elementwise work (about 1% at head_dim 128), and its autodiff keeps P where the fused
  backward recomputes QK^T."""
  b, lq, lk, n, d = 2, 256, 384, 2, 128
  q, kv = jnp.zeros((b, lq, n, d)), jnp.zeros((b, lk, n, d))
  kernel = flops.splash_call_cost(b, lq, lk, n, d, (256, 128, 128))
  assert 1.0 < xla_flops(xla_attention, q, kv, kv) / kernel.flops < 1.02

  def value_and_vjp(q, k, v, cotangent):
    out, back = jax.vjp(xla_attention, q, k, v)
    return out, back(cotangent)

  train = flops.splash_call_cost(b, lq, lk, n, d, (256, 128, 128), train=True)
  recompute = 2 * b * n * lq * lk * d
  assert 1.0 < xla_flops(value_and_vjp, q, kv, kv, q) / (train.flops - recompute) < 1.02


def test_step_calls_match_xlas_count_of_a_blocks_attention():
  """splash_step_cost's calls for one layer (AIPA video->[video; refs], refs->refs, text
  cross-attention; the cached variant without refs->refs) against XLA's count of the attention
  the block runs (models/attention.py, XLA backend), with padded references and prompts."""
  cfg = dataclasses.replace(CFG, num_layers=1, num_heads=2)  # head_dim 512
  b, video, refs, text, n, d = 2, 256, 128, 128, cfg.num_heads, cfg.head_dim
  z = lambda l: jnp.zeros((b, l, n, d))
  ref_lengths, text_lengths = jnp.asarray([128, 64]), jnp.asarray([100, 128])

  def block(qv, qr, qt):
    vid, ref = attn.aipa_attention(qv, qv, qv, qr, qr, qr, ref_lengths)
    return vid, ref, attn.attention(qv, qt, qt, text_lengths)

  def cached(qv, qr, qt):  # references' K/V from the cache: no refs->refs call
    return (attn.attention(qv, (qv, qr), (qv, qr), video + ref_lengths),
            attn.attention(qv, qt, qt, text_lengths))

  kernel = flops.splash_step_cost(cfg, video, refs, text, batch=b, train=False)
  assert 1.0 < xla_flops(block, z(video), z(refs), z(text)) / kernel.flops < 1.02
  kernel = flops.splash_step_cost(cfg, video, refs, text, batch=b, train=False, ref_cached=True)
  assert 1.0 < xla_flops(cached, z(video), z(refs), z(text)) / kernel.flops < 1.02


@pytest.mark.parametrize("mode", ["all_gather", "ulysses"])
def test_per_device_shares_add_up_to_the_step(mode):
  cfg = dataclasses.replace(CFG, context_parallel=mode)
  mesh = {"data": 2, "fsdp": 2, "context": 2, "tensor": 2}
  one = flops.splash_step_cost(cfg, 2048, 1024, 512, batch=4)
  share = flops.splash_step_cost(cfg, 2048, 1024, 512, batch=4, mesh_shape=mesh)
  assert share.flops * math.prod(mesh.values()) == one.flops
  # A batch of 2 on data x fsdp = 4 splits over data only: each fsdp pair repeats its example,
  # so a device does as much as with a batch of 4.
  odd = flops.splash_step_cost(cfg, 2048, 1024, 512, batch=2, mesh_shape=mesh)
  assert odd.flops == share.flops


def test_training_counts_the_remat_forward_and_roofline_seconds():
  train = flops.splash_step_cost(CFG, 1024, 0, 512)
  full = flops.splash_step_cost(dataclasses.replace(CFG, remat="full"), 1024, 0, 512)
  forward = flops.splash_step_cost(CFG, 1024, 0, 512, train=False)
  assert full.flops == train.flops + forward.flops
  t = full.seconds("TPU v6e")
  assert t["compute_s"] == pytest.approx(full.flops / 918e12)
  assert t["bound_s"] == max(t["compute_s"], t["hbm_s"])
  with pytest.raises(ValueError, match="device kind 'cpu'"):
    full.seconds("cpu")
