"""Splash is safe by construction on a multi-chip host: every Mosaic (non-interpreted Pallas)
call a model can reach runs under shard_map on the model's mesh, whatever context the caller is
in, and what cannot be made safe refuses in one line.

On CPU the kernel is interpreted, so these tests make `sharding.platform` answer "tpu" (what a
program on a TPU mesh, or a deviceless AOT compile, sees) and read the traced jaxpr: every
pallas_call that is not interpreted must sit inside a shard_map over the 8 host devices. A Mosaic
call outside one is what XLA refuses on real chips ("Mosaic kernels cannot be automatically
partitioned"); tests/test_train.py compiles the splash train step for a v5e-4 slice too.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wildactor_jax import sharding
from wildactor_jax.config_lib import load_config_file
from wildactor_jax.models import attention as attn
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import abstract_model, create_model
from wildactor_jax.models.transformer import References

LAYOUT = (1, 4, 2, 1)


def mosaic_calls(jaxpr, inside=None):
  """[(devices of the enclosing shard_map's mesh, or None)] for every non-interpreted
  pallas_call in `jaxpr` and the jaxprs nested in its equations."""
  found = []
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "pallas_call" and not eqn.params["interpret"]:
      found.append(inside)
    here = eqn.params["mesh"].size if name == "shard_map" else inside
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found += mosaic_calls(sub, here)
  return found


@pytest.fixture
def on_tpu(monkeypatch):
  """Programs compile for TPU: splash lowers to Mosaic, not Pallas interpret mode."""
  monkeypatch.setattr(sharding, "platform", lambda mesh=None: "tpu")


def tiny(attention="splash", **fields):
  config = load_config_file("configs/wildactor_wan22_5b.py:tiny")
  cfg = ModelConfig.from_mapping(config.model)
  return dataclasses.replace(cfg, attention=attention, num_layers=1, **fields), config


def inputs(cfg):
  rng = np.random.default_rng(0)
  f = lambda *s: jnp.asarray(rng.standard_normal(s, dtype=np.float32))
  refs = References(f(2, 2, 4, 4, cfg.in_channels), jnp.asarray([[0, 1], [1, 0]]),
                    jnp.asarray([[True, True], [True, False]]))
  return f(2, 3, 4, 4, cfg.in_channels), jnp.asarray([500.0, 200.0]), f(2, 6, cfg.text_dim), refs


def traced(model, *, context_mesh=None):
  """The jaxprs of a forward with references and of the reference cache, traced by a caller in
  `context_mesh`'s activation_sharding (None: no context, as evaluate or a benchmark calls)."""
  graphdef, state = nnx.split(model)
  x, t, text, refs = inputs(model.cfg)
  forward = lambda st: nnx.merge(graphdef, st)(x, t, text, references=refs)
  cache = lambda st: nnx.merge(graphdef, st).encode_references(refs, (3, 2, 2))
  with sharding.activation_sharding(context_mesh, sharding.DEFAULT_RULES):
    return [jax.make_jaxpr(fn)(state).jaxpr for fn in (forward, cache)]


def test_a_model_on_a_mesh_runs_mosaic_only_under_shard_map_in_any_context(on_tpu):
  cfg, config = tiny()
  mesh = sharding.create_mesh(LAYOUT)
  model = create_model(cfg, seed=0, mesh=mesh, rules=tuple(config.mesh.rules))
  assert model.mesh is mesh
  other = sharding.create_mesh((8, 1, 1, 1))
  seen = []
  for context in (None, other):  # the caller's context (or none) changes nothing
    jaxprs = traced(model, context_mesh=context)
    calls = [c for j in jaxprs for c in mosaic_calls(j)]
    assert calls and calls == [8] * len(calls), calls
    seen.append([str(j) for j in jaxprs])
  assert seen[0] == seen[1]  # one trace: a jit cache keyed on the model is right


def test_run_setups_put_the_mesh_in_every_graph_definition(on_tpu, monkeypatch):
  """What load_run, train and the AOT planner build from (state.setup_from_config): the train
  step's graph definition and the restored model's carry the run's mesh and rules, so a jit
  cache keyed on them (inference.denoise_step) can never reuse another mesh's trace."""
  from wildactor_jax.train_lib import state as state_lib
  config = load_config_file("configs/wildactor_wan22_5b.py:tiny")
  config.model.update(attention="splash", num_layers=1)
  mesh = sharding.create_mesh(LAYOUT, config.mesh.axes)
  rs = state_lib.setup_from_config(config, mesh, optimizer=False)
  stepped = nnx.merge(rs.setup.graphdef, rs.setup.abstract_frozen, rs.setup.abstract_train["lora"])
  rules = tuple((n, tuple(a) if isinstance(a, list) else a) for n, a in config.mesh.rules)
  assert stepped.mesh is mesh and stepped.rules == rules
  assert rs.setup.graphdef != nnx.graphdef(abstract_model(ModelConfig.from_mapping(config.model)))
  # load_run's model is RunSetup.create_model's: created (shapes only here) on the run's mesh.
  monkeypatch.setattr(state_lib, "create_model", lambda cfg, **kw: abstract_model(
      cfg, mesh=kw["mesh"], rules=kw["rules"]))
  assert rs.create_model().mesh is mesh


def test_distillation_builds_all_three_models_on_the_run_mesh(on_tpu):
  """A distillation step (wildactor_jax/distill) runs the teacher, the generator and the critic:
  the teacher's graph definition carries the run's mesh as the student's (generator and critic
  share it) does, so none of them reaches an unpartitioned Mosaic call."""
  import ml_collections
  from wildactor_jax.distill import setup as setup_lib
  config = load_config_file("configs/wildactor_wan22_5b.py:tiny")
  config.model.update(attention="splash", num_layers=1)
  s = setup_lib.settings_from_config(config, planning=True)
  run_config = ml_collections.ConfigDict(config.to_dict())
  run_config.model = setup_lib.student_model_config(config.model.to_dict(), s)
  mesh = sharding.create_mesh(LAYOUT, config.mesh.axes)
  rules = tuple((n, tuple(a) if isinstance(a, list) else a) for n, a in config.mesh.rules)
  parts = setup_lib.make_parts(run_config, s, mesh, rules)
  teacher_cfg = dataclasses.replace(ModelConfig.from_mapping(run_config.model), video_lora_rank=0)
  teacher = nnx.merge(parts.teacher_graph, nnx.state(abstract_model(teacher_cfg, s.seed)))
  student = nnx.merge(parts.student_graph, parts.setup.abstract_frozen,
                      parts.abstract_state["lora"])
  for model in (teacher, student):
    assert model.mesh is mesh and model.rules == rules


def test_splash_without_a_mesh_on_many_tpu_devices_refuses(on_tpu):
  cfg, _ = tiny()
  model = create_model(cfg, seed=0)  # no mesh: nothing to shard the kernel over
  assert model.mesh is None
  with pytest.raises(ValueError, match=r"^model.attention='splash' on 8 TPU devices runs under "
                                       r"shard_map on the model's mesh"):
    traced(model)
  q = jnp.zeros((1, 128, 2, 64))
  with pytest.raises(ValueError, match="on 8 TPU devices"):
    jax.make_jaxpr(lambda q: attn.attention(q, q, q, implementation="splash"))(q)
  # The XLA backend needs no mesh: XLA partitions it.
  assert not mosaic_calls(jax.make_jaxpr(lambda q: attn.attention(q, q, q))(q).jaxpr)


def test_splash_on_a_gpu_mesh_refuses_instead_of_interpreting(monkeypatch):
  monkeypatch.setattr(sharding, "platform", lambda mesh=None: "gpu")
  cfg, config = tiny()
  mesh = sharding.create_mesh(LAYOUT)
  with pytest.raises(ValueError, match=r"^model.attention='splash' is the TPU Pallas kernel; on "
                                       r"gpu use 'cudnn'"):
    create_model(cfg, seed=0, mesh=mesh, rules=tuple(config.mesh.rules))
  q = jnp.zeros((1, 128, 2, 64))
  with sharding.activation_sharding(mesh, sharding.DEFAULT_RULES):
    with pytest.raises(ValueError, match="TPU Pallas kernel"):
      attn.attention(q, q, q, implementation="splash")
