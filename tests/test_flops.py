"""The analytic FLOP count (used for TFLOP/s and MFU) agrees with XLA's own count."""
import dataclasses

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from wildactor_jax import flops
from wildactor_jax.models import attention
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import abstract_model
from wildactor_jax.models.transformer import References


def xla_flops(fn, *args):
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


QKV, ALL_TARGETS = ("q", "k", "v"), ("q", "k", "v", "o", "ffn_in", "ffn_out")


# The last case's reference LoRA (every projection, rank 256) is a third of the forward's FLOPs.
@pytest.mark.parametrize("aipa,targets,rank", [(True, QKV, 32), (False, QKV, 32),
                                               (True, ALL_TARGETS, 256)])
def test_analytic_forward_and_train_flops_match_xla(monkeypatch, aipa, targets, rank):
  monkeypatch.setattr(attention, "QUERY_CHUNK", 1 << 30)  # one dense call: no loop to undercount
  cfg = ModelConfig(dim=256, ffn_dim=1024, num_heads=2, num_layers=2, in_channels=48,
                    out_channels=48, text_dim=256, lora_rank=rank, lora_targets=targets,
                    aipa=aipa)
  graphdef, state = nnx.split(abstract_model(cfg))
  s = lambda *shape, dt=jnp.float32: jax.ShapeDtypeStruct(shape, dt)
  x, t, c = s(1, 4, 16, 16, 48), s(1), s(1, 64, 256)
  refs = References(s(1, 4, 16, 16, 48), s(1, 4, dt=jnp.int32), s(1, 4, dt=jnp.bool_))

  def forward(state, x, t, c, r):
    return nnx.merge(graphdef, state)(x, t, c, references=r)

  def train(state, x, t, c, r):
    loss = lambda m: jnp.mean(jnp.square(m(x, t, c, references=r) - x))
    return nnx.grad(loss, argnums=nnx.DiffState(0, nnx.LoRAParam))(nnx.merge(graphdef, state))

  # XLA counts a scan body once: compare with the analytic count of one (generic) layer.
  analytic = flops.forward_flops(dataclasses.replace(cfg, num_layers=1), 256, 256, 64)
  assert xla_flops(forward, state, x, t, c, refs) / analytic.forward == pytest.approx(1.0, abs=0.1)
  assert xla_flops(train, state, x, t, c, refs) / analytic.train == pytest.approx(1.0, abs=0.1)


def test_peaks_and_mfu():
  assert flops.device_peak_tflops("TPU v5p") == 459.0
  assert flops.device_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
  assert flops.device_peak_tflops("cpu") is None
  m = flops.mfu(989e12, 2.0, 1, "NVIDIA H100 80GB HBM3")
  assert m["mfu"] == pytest.approx(0.5)


def test_cached_references_cost_only_the_longer_key_set():
  cfg = ModelConfig(lora_rank=128)
  live = flops.forward_flops(cfg, 9360, 2340)
  cached = flops.forward_flops(cfg, 9360, 2340, ref_cached=True)
  none = flops.forward_flops(cfg, 9360, 0)
  assert none.forward < cached.forward < live.forward
  assert cached.matmul_backprop == none.matmul_backprop and cached.lora == 0


def test_lora_step_is_between_two_and_three_forwards_for_5b():
  f = flops.forward_flops(ModelConfig(lora_rank=128), 9360, 2340, 512)  # Wan2.2-5B, paper clip
  # frozen matmuls x2, attention x2-3: far below a full 6N-style step with weight gradients.
  assert 2.0 < f.train / f.forward < 3.0
  block_params = 30 * (4 * 3072**2 + 2 * 3072 * 14336)
  assert 2 * block_params * 11700 < f.forward < 3 * 2 * block_params * 11700


def test_chip_table():
  assert flops.chip_spec("TPU v5 lite")[0] == 197.0 and flops.chip_spec("TPU v5")[0] == 459.0
  assert flops.chip_spec("TPU v6 lite")[0] == 918.0
  assert flops.chip_spec("TPU v5p")[1] == 95


def test_reference_counts_follow_the_pipelines_draws():
  """reference_count_distribution against the input pipelines' own draws: records_source's
  count rule (choose_counts, on records holding enough references) mixed with the task draw, and
  random_source's examples (their ref_mask)."""
  import numpy as np
  from wildactor_jax.config_lib import load_config_file
  from wildactor_jax.input import random_source, records_source, schema
  config = load_config_file("configs/wildactor_wan22_5b.py:v5p-64")
  dist = flops.reference_count_distribution(config)
  assert sum(dist.values()) == pytest.approx(1.0)
  assert flops.mean_references(config) == pytest.approx(0.8 * 161 / 36)  # ~3.58 of 6 slots
  opts = records_source._options(config.data)
  rng = np.random.default_rng(0)
  draws = []
  for _ in range(20000):
    task = int(rng.choice(len(schema.TASKS), p=opts["task_p"]))
    if task == schema.VC or (task == schema.CONTINUE and opts["continue_references"]):
      draws.append(sum(records_source.choose_counts(rng, 10, 10, opts)))
    else:
      draws.append(0)
  for n, p in dist.items():
    assert np.mean(np.asarray(draws) == n) == pytest.approx(p, abs=0.012), n
  config.data.update(random_counts=False, num_faces=4, num_bodies=4)
  assert flops.reference_count_distribution(config) == pytest.approx({0: 0.2, 6: 0.8})

  tiny = load_config_file("configs/wildactor_wan22_5b.py:tiny")  # the random source
  shapes = schema.example_shapes(tiny)
  seen = [int(random_source.make_example(shapes, dict(tiny.data.task_probs), 0, "train", i,
                                         schema.continue_options(tiny.data))["ref_mask"].sum())
          for i in range(3000)]
  for n, p in flops.reference_count_distribution(tiny).items():
    assert np.mean(np.asarray(seen) == n) == pytest.approx(p, abs=0.03), n


def test_step_model_flops_count_valid_references_only():
  from wildactor_jax.config_lib import load_config_file
  config = load_config_file("configs/wildactor_wan22_5b.py:v5p-64")
  cfg, video, slots, text = flops.step_tokens(config)
  per_ref, batch = slots // 6, int(config.data.global_batch_size)
  want = sum(p * flops.forward_flops(cfg, video, n * per_ref, text, batch=batch).train
             for n, p in flops.reference_count_distribution(config).items())
  step = flops.step_flops_for_config(config).train
  assert step == pytest.approx(want, rel=1e-12)
  full = flops.forward_flops(cfg, video, slots, text, batch=batch).train
  none = flops.forward_flops(cfg, video, 0, text, batch=batch).train
  assert none < step < full and step / full == pytest.approx(0.917, abs=0.01)
