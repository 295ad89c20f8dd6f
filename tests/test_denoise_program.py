"""The denoising step `launch/aot_compile.py --program generate` plans is the step `generate`
runs: compiled from abstract inputs alone, it accepts the real weights and inputs with the
shardings it was compiled for (a compiled executable refuses any other) and returns what
`inference.denoise_step` returns on the live model, guided (teacher) and unguided (student).

Runs on 8 host CPU devices (conftest.py), weights FSDP over 4 and video over 2 context devices.
"""
from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from wildactor_jax import inference, sampling
from wildactor_jax.config_lib import load_config_file
from wildactor_jax.infer.denoise_program import denoise_program
from wildactor_jax.models.transformer import References
from wildactor_jax.sharding import create_mesh
from wildactor_jax.train_lib import state as state_lib


@pytest.mark.parametrize("sample", [dict(), dict(cfg=1.0, solver="fewstep", steps=4)],
                         ids=["teacher_cfg5", "student_cfg1"])
def test_planned_step_is_the_generation_step(sample):
  config = load_config_file("configs/wildactor_wan22_5b.py:tiny")
  config.sample.update(**sample)
  if sample:  # a distilled student: a step LoRA on the video tokens, as its config.json says
    config.model.video_lora_rank = 4
  mesh = create_mesh((1, 4, 2, 1), tuple(config.mesh.axes))
  program = denoise_program(config, mesh)
  compiled = program.step.lower(*program.args).compile()
  guided = sample.get("cfg", config.sample.cfg) != 1.0
  assert program.info["cfg_batch"] == (2 if guided else 1)
  assert program.info["forward_passes_per_clip"] == program.settings.steps * (2 if guided else 1)

  if sample:
    config.train.trainable = "video_lora"  # what a distilled run's config.json holds
  rs = state_lib.setup_from_config(config, mesh, optimizer=False)
  model = rs.create_model()
  _, frozen, lora = state_lib.split_model(model, rs.trainable)
  # As load_run restores a run: the trained LoRA on the run set-up's shardings, in float32.
  lora = jax.device_put(jax.tree.map(lambda a: a.astype(np.float32), lora),
                        rs.setup.train_shardings["lora"])
  nnx.update(model, lora)
  replicated = NamedSharding(mesh, P())
  rng = np.random.default_rng(0)
  put = lambda a: jax.device_put(np.asarray(a), replicated)
  noise_abs, text_abs = program.args[2][0], program.args[4]
  r, grid = program.info["references"], program.info["token_grid"]
  refs = References(put(rng.standard_normal((1, r, *noise_abs.shape[2:]), np.float32)),
                    put(np.asarray([[i % 2 for i in range(r)]], np.int32)),
                    put(np.ones((1, r), bool)))
  cache = program.encode(frozen, lora, refs)
  state = sampling.initial_state(put(rng.standard_normal(noise_abs.shape, np.float32)))
  state = tuple(put(a) for a in state)
  table = sampling.coefficient_table(sampling.coefficients(
      program.settings.solver, program.settings.steps, program.settings.shift))
  row = jax.tree.map(lambda a: put(a[1]), table)
  text = put(rng.standard_normal(text_abs.shape, np.float32))
  scale = put(np.float32(5.0)) if guided else None
  got = compiled(frozen, lora, state, row, text, cache, scale)

  live_cache = nnx.jit(lambda m, r: m.encode_references(r, grid))(model, refs)
  live_cache = inference.double_batch(live_cache) if guided else live_cache
  want = inference.denoise_step(model, state, row, text, live_cache, scale)
  for a, b in zip(got, want):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
