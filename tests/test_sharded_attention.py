"""Splash attention under shard_map on the 8 host CPU devices (kernel in Pallas interpret mode):
every AIPA call equals XLA attention on any mesh layout, Ulysses equals all-gather, and the
jitted train step and denoise step give the XLA numbers."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding

from wildactor_jax.models import attention as attn
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import create_model
from wildactor_jax.models.transformer import References
from wildactor_jax.sharding import (DEFAULT_RULES, activation_sharding, create_mesh, fit_spec,
                                    logical_to_spec)

LAYOUTS = [(8, 1, 1, 1), (1, 8, 1, 1), (1, 2, 2, 2), (1, 1, 4, 2)]
# Reference and text lengths the context degrees (2, 4) do not all divide: those parts stay whole.
B, LV, LR, LT, N, D = 8, 16, 5, 6, 8, 32
REF_LENGTHS = np.array([5, 4, 0, 5, 3, 2, 5, 1], np.int32)   # AIPA: valid reference tokens first
TEXT_LENGTHS = np.array([6, 3, 5, 6, 1, 6, 4, 2], np.int32)  # padded prompts


def tensors(seed=0):
  rng = np.random.default_rng(seed)
  shapes = dict(qv=LV, kv=LV, vv=LV, qr=LR, kr=LR, vr=LR, qt=LV, kt=LT, vt=LT)
  return {k: rng.standard_normal((B, l, N, D), dtype=np.float32) for k, l in shapes.items()}


def aipa_calls(x, **options):
  """The block's attention calls: AIPA video->[video; refs] and refs->refs, the cached-K/V
  video call (references as a K/V part), and text cross-attention with padded prompts."""
  ref_lengths, text_lengths = jnp.asarray(REF_LENGTHS), jnp.asarray(TEXT_LENGTHS)
  video, refs = attn.aipa_attention(x["qv"], x["kv"], x["vv"], x["qr"], x["kr"], x["vr"],
                                    ref_lengths, **options)
  cached = attn.attention(x["qv"], (x["kv"], x["kr"]), (x["vv"], x["vr"]), LV + ref_lengths,
                          **options)
  text = attn.attention(x["qt"], x["kt"], x["vt"], text_lengths, **options)
  return dict(video=video, refs=refs, cached=cached, text=text)


def on_mesh(layout, **options):
  """aipa_calls jitted on a mesh, inputs laid out as the model's activations are."""
  mesh = create_mesh(layout)
  spec = lambda a: fit_spec(logical_to_spec(("batch", "length", "heads", None), DEFAULT_RULES),
                            a.shape, mesh)

  def run(x):
    with activation_sharding(mesh, DEFAULT_RULES):
      return aipa_calls(x, **options)

  x = {k: jax.device_put(v, NamedSharding(mesh, spec(v))) for k, v in tensors().items()}
  return jax.device_get(jax.jit(run)(x))


def xla_reference():
  return jax.device_get(aipa_calls({k: jnp.asarray(v) for k, v in tensors().items()}))


def valid_refs(out):  # reference rows past a sample's valid references are padding
  return [out["refs"][b, :max(n, 1)] for b, n in enumerate(REF_LENGTHS)]


def assert_same(a, b, tol):
  for name in ("video", "cached", "text"):
    np.testing.assert_allclose(a[name], b[name], rtol=tol, atol=tol, err_msg=name)
  for x, y in zip(valid_refs(a), valid_refs(b)):
    np.testing.assert_allclose(x, y, rtol=tol, atol=tol, err_msg="refs")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sharded_splash_equals_xla_attention(layout):
  assert_same(on_mesh(layout, implementation="splash"), xla_reference(), 1e-5)


@pytest.mark.parametrize("layout", [(1, 2, 2, 2), (1, 1, 4, 2)])
def test_ulysses_equals_all_gather(layout):
  gathered = on_mesh(layout, implementation="splash", context_parallel="all_gather")
  assert_same(on_mesh(layout, implementation="splash", context_parallel="ulysses"), gathered, 1e-6)
  # Ulysses is a layout of the work, not a kernel feature: the XLA backend runs it too.
  assert_same(on_mesh(layout, implementation="xla", context_parallel="ulysses"), gathered, 1e-5)


def test_ulysses_degree_must_divide_heads():
  mesh = create_mesh((1, 1, 4, 2))
  x = jnp.zeros((1, 8, 2, 8))  # 2 heads / tensor 2 = 1 head per shard, context 4
  with activation_sharding(mesh, DEFAULT_RULES):
    with pytest.raises(ValueError, match="context degree 4 does not divide the 1 heads"):
      attn.attention(x, x, x, implementation="splash", context_parallel="ulysses")
  with pytest.raises(ValueError, match="model.context_parallel 'ring'"):
    attn.attention(x, x, x, context_parallel="ring")


def tiny_training(layout):
  """The tiny WildActor config on `layout`, its random model split into (frozen, LoRA) states
  (the weights do not depend on the attention backend, so both runs share them)."""
  from wildactor_jax.config_lib import load_config_file
  from wildactor_jax.train_lib import state as state_lib
  config = load_config_file("configs/wildactor_wan22_5b.py:tiny")
  config.train.warmup_steps = 0
  mesh = create_mesh(layout, config.mesh.axes)
  model = create_model(ModelConfig.from_mapping(config.model), seed=0, mesh=mesh,
                       rules=tuple(config.mesh.rules))
  _, frozen, lora = state_lib.split_model(model)
  return config, mesh, frozen, lora


def train_run(training, attention: str, steps: int = 2):
  """`steps` jitted, sharded train steps (train_lib/step.py) -> (losses, final LoRA)."""
  from wildactor_jax.input import batches as batches_lib, random_source
  from wildactor_jax.train_lib import state as state_lib, step as step_lib
  config, mesh, frozen, lora = training
  rules = tuple(config.mesh.rules)
  cfg = dataclasses.replace(ModelConfig.from_mapping(config.model), attention=attention)
  tx, schedule = state_lib.build_optimizer(config.train)
  setup = state_lib.make_setup(cfg, tx, mesh, rules)
  state = state_lib.init_train_state(lora, tx, setup, seed=0)
  step = step_lib.jit_train_step(
      step_lib.make_train_step(setup, tx, schedule, config.flow.shift, mesh, rules),
      setup, batches_lib.abstract_batch(config, mesh, rules), mesh, rules)
  batches = random_source.create_dataset(config)
  losses = []
  for _ in range(steps):
    state, metrics = step(frozen, state, batches_lib.to_global(next(batches), mesh, rules))
    losses.append(float(metrics["loss"]))
  return np.array(losses), jax.device_get(state["lora"])


def test_train_steps_with_splash_equal_xla():
  training = tiny_training((1, 2, 2, 2))
  xla_losses, xla_lora = train_run(training, "xla")
  losses, lora = train_run(training, "splash")
  assert xla_losses[0] != xla_losses[1]  # the second step saw updated LoRA weights
  np.testing.assert_allclose(losses, xla_losses, rtol=1e-4, atol=1e-4)
  for a, b in zip(jax.tree.leaves(lora), jax.tree.leaves(xla_lora)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_denoise_with_sharded_splash_equals_xla():
  """The generation path: reference K/V cache, then jitted CFG denoise steps, on the mesh inside
  activation_sharding; a CFG batch of 2 that the 4 fsdp devices do not divide, video tokens over
  2 context devices, Ulysses against XLA's all-gather."""
  from flax import nnx
  from wildactor_jax import inference
  from wildactor_jax.config_lib import load_config_file
  from wildactor_jax.models.loading import abstract_model
  config = load_config_file("configs/wildactor_wan22_5b.py:tiny")
  mesh, rules = create_mesh((1, 4, 2, 1)), tuple(config.mesh.rules)
  cfg = ModelConfig.from_mapping(config.model)
  _, state = nnx.split(create_model(cfg, seed=0, mesh=mesh, rules=rules))
  rng = np.random.default_rng(0)
  f = lambda *s: jnp.asarray(rng.standard_normal(s, dtype=np.float32))
  grid, refs = (3, 4, 4), References(f(1, 2, 4, 4, 48), jnp.asarray([[0, 1]]), jnp.ones((1, 2), bool))
  text, noise = f(2, 6, cfg.text_dim), f(1, *grid, 48)
  settings = inference.GenerationSettings(frames=9, height=64, width=64, steps=2, solver="euler")

  def generate(attention, context_parallel):
    graphdef, _ = nnx.split(abstract_model(dataclasses.replace(
        cfg, attention=attention, context_parallel=context_parallel)))
    model = nnx.merge(graphdef, state)
    with activation_sharding(mesh, rules):
      cache = nnx.jit(lambda m, r: m.encode_references(r, (3, 2, 2)))(model, refs)
      return jax.device_get(inference.denoise(model, text, cache, noise, settings))

  np.testing.assert_allclose(generate("splash", "ulysses"), generate("xla", "all_gather"),
                             rtol=1e-5, atol=1e-5)
