"""The splash kernel's analytic cost (flops.py): the FLOPs of its matmuls on padded tiles, the
HBM traffic its tiling implies, and per-device shares that add up to the whole step."""
import dataclasses
import math

import pytest

from wildactor_jax import flops
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


def test_kernel_forward_equals_the_models_attention_flops():
  """With lengths on tile boundaries, the kernel does exactly the attention FLOPs that
  forward_flops counts for the model (AIPA's two self-attention calls + text cross-attention)."""
  video, refs, text = 2048, 1024, 512
  model = flops.forward_flops(CFG, video, refs, text, batch=3)
  kernel = flops.splash_step_cost(CFG, video, refs, text, batch=3, train=False)
  assert kernel.flops == model.self_attention + model.cross_attention
  cached = flops.splash_step_cost(CFG, video, refs, text, batch=3, train=False, ref_cached=True)
  assert kernel.flops - cached.flops == 3 * CFG.num_layers * 4 * CFG.dim * refs * refs


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
