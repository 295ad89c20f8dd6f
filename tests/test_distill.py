"""Few-step distillation (wildactor_jax/distill) on the tiny config: the video adapter set keeps
AIPA's invariants, the few-step sampler is Euler at fixed sigmas with one pass per step, DMD's
gradient is what it claims, a distillation run's loss decreases and resumes bit-identically after
a failed step, a distilled run restores on its teacher, and bad flags are one-line errors.

Runs on 8 host CPU devices (conftest.py); one tiny teacher is trained per module.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import faults

from wildactor_jax import config_lib, inference
from wildactor_jax.distill import dmd, setup as setup_lib
from wildactor_jax.infer import load_run
from wildactor_jax.infer.settings import settings_from_config
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.lora import VideoLoRAParam
from wildactor_jax.models.transformer import References, WanTransformer
from wildactor_jax.sharding import create_mesh
from wildactor_jax.train import train_and_evaluate
from wildactor_jax.train_lib import checkpoint as ckpt_lib, metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "wildactor_wan22_5b.py") + ":tiny"


def tiny_model_config(**kw) -> ModelConfig:
  d = dict(config_lib.model_config("tiny", lora_rank=4))
  d.pop("name")
  return ModelConfig.from_mapping({**d, **kw})


def refs_and_inputs(cfg, seed=0):
  k = jax.random.split(jax.random.key(seed), 4)
  x = jax.random.normal(k[0], (2, 3, 4, 4, cfg.in_channels))
  text = jax.random.normal(k[1], (2, 8, cfg.text_dim))
  refs = References(jax.random.normal(k[2], (2, 3, 4, 4, cfg.in_channels)),
                    jnp.asarray([[0, 1, 1], [1, 0, 0]], jnp.int32),
                    jnp.asarray([[True, True, False], [True, False, False]]))
  return x, text, refs


def test_video_adapters_keep_the_teacher_and_never_reach_references():
  """With the step LoRA's `up` at zero the model is exactly the teacher (same seed: adding the
  adapters leaves every other weight's init unchanged); a non-zero step LoRA changes the video
  but neither the reference K/V cache nor the reference states (AIPA: refs never read video)."""
  teacher = WanTransformer(tiny_model_config(), rngs=nnx.Rngs(0))
  student = WanTransformer(tiny_model_config(video_lora_rank=4), rngs=nnx.Rngs(0))
  x, text, refs = refs_and_inputs(teacher.cfg)
  t = jnp.asarray([300.0, 800.0])
  grid = (3, 2, 2)
  a, ra = teacher(x, t, text, references=refs, return_reference_states=True)
  b, rb = student(x, t, text, references=refs, return_reference_states=True)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(ra), np.asarray(rb))
  # A non-zero step LoRA: every up factor random.
  lora = nnx.state(student, VideoLoRAParam)
  keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(lora))))
  nnx.update(student, jax.tree.map(lambda v: 0.1 * jax.random.normal(next(keys), v.shape), lora))
  c, rc = student(x, t, text, references=refs, return_reference_states=True)
  assert float(jnp.abs(c - a).max()) > 1e-3
  np.testing.assert_array_equal(np.asarray(ra), np.asarray(rc))
  cache_t, cache_s = teacher.encode_references(refs, grid), student.encode_references(refs, grid)
  for u, v in zip(jax.tree.leaves(cache_t), jax.tree.leaves(cache_s)):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
  # The cached forward is the live one for the student too.
  np.testing.assert_allclose(np.asarray(student(x, t, text, reference_cache=cache_s)),
                             np.asarray(c), rtol=1e-5, atol=1e-5)


def test_few_step_sampler_is_a_hand_computed_two_step_euler():
  """2 steps, shift 3: sigmas [1, 0.75, 0] (timesteps 1000 and 750, Euler), one conditional
  pass per step (cfg 1), computed here by hand from the model's own velocities."""
  model = WanTransformer(tiny_model_config(video_lora_rank=4), rngs=nnx.Rngs(0))
  x, text, refs = refs_and_inputs(model.cfg)
  refs = jax.tree.map(lambda a: a[:1], refs)
  cache = model.encode_references(refs, (3, 2, 2))
  noise = x[:1]
  text2 = jnp.concatenate([text[:1], jnp.zeros_like(text[:1])])
  s = inference.GenerationSettings(frames=9, height=64, width=64, steps=2, cfg=1.0, shift=3.0,
                                   solver="fewstep")
  got = np.asarray(inference.denoise(model, text2, cache, noise, s))
  v = lambda z, t: np.asarray(model(z, jnp.asarray([t]), text[:1], reference_cache=cache),
                              np.float64)
  x0 = np.asarray(noise, np.float64)
  x1 = x0 + (0.75 - 1.0) * v(x0.astype(np.float32), 1000.0)
  x2 = x1 + (0.0 - 0.75) * v(x1.astype(np.float32), 750.0)
  np.testing.assert_allclose(got, x2, rtol=1e-5, atol=1e-5)
  assert inference.forward_passes(s) == 2
  assert inference.forward_passes(inference.GenerationSettings(9, 64, 64, steps=25)) == 50


def test_dmd_gradient_and_loss():
  """The loss's gradient is the normalised real-minus-fake direction over the element count,
  zero on the clean prefix; the normaliser is per sample."""
  k = jax.random.split(jax.random.key(0), 3)
  gen, real, fake = (jax.random.normal(kk, (2, 3, 2, 2, 4)) for kk in k)
  weights = jnp.asarray([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
  g = dmd.dmd_gradient(gen, real, fake, weights)
  norm0 = np.abs(np.asarray(gen - real))[0].mean()
  np.testing.assert_allclose(np.asarray(g[0]), np.asarray(fake - real)[0] / norm0, rtol=1e-5)
  assert float(jnp.abs(g[1, 0]).max()) == 0.0
  loss, grad = jax.value_and_grad(lambda x: dmd.dmd_loss(x, g, weights))(gen)
  count = float(weights.sum()) * 2 * 2 * 4
  np.testing.assert_allclose(np.asarray(grad), np.asarray(g) / count, rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(float(loss), 0.5 * float(jnp.sum(g ** 2)) / count, rtol=1e-5)
  x0 = dmd.impose_clean(gen, real, jnp.asarray([0, 2]))
  np.testing.assert_array_equal(np.asarray(x0[1, :2]), np.asarray(real[1, :2]))
  np.testing.assert_array_equal(np.asarray(x0[1, 2:]), np.asarray(gen[1, 2:]))


PROMPT = "a person in a red shirt waves"


def tiny_config(encoders: str):
  """The tiny config at 32x32 x 5 frames with a pixel autoencoder and the random UMT5 under
  `encoders` (so that `generate` runs on it)."""
  config = config_lib.load_config_file(TINY)
  config.vae.update(kind="pixel", spatial_factor=4)
  config.text_encoder.update(path=os.path.join(encoders, "umt5"),
                             tokenizer_path=os.path.join(encoders, "tok", "tokenizer.json"),
                             max_length=16)
  config.data.update(height=32, width=32, frames=5)
  return config


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """Two training steps of the tiny WildActor (the teacher); returns its workdir."""
  from wildactor_jax.models import tokenizer, umt5
  encoders = tmp_path_factory.mktemp("encoders")
  tok = tokenizer.build_demo_tokenizer(PROMPT.split(), str(encoders / "tok"))
  umt5.save_random(str(encoders / "umt5"), umt5.UMT5Config(vocab_size=16, d_model=32, d_kv=8,
                                                            num_heads=2, d_ff=64, num_layers=1),
                   tokenizer_path=tok)
  workdir = str(tmp_path_factory.mktemp("teacher"))
  config = tiny_config(str(encoders))
  config.train.update(steps=2, warmup_steps=1, log_every=2, eval_every=0)
  config.checkpoint.every = 2
  train_and_evaluate(config, workdir)
  return workdir


def distill_config(teacher: str, **distill):
  """The distillation config (its encoders are the teacher's, which the student records)."""
  config = tiny_config(os.path.dirname(teacher))
  config.distill.update(teacher_workdir=teacher, **distill)
  return config


def final_state(workdir: str, config) -> dict:
  s = setup_lib.settings_from_config(config)
  mesh = create_mesh(config.mesh.shape, config.mesh.axes)
  rules = tuple(config.mesh.rules)
  from wildactor_jax.train_lib import workdir as workdir_lib
  parts = setup_lib.make_parts(workdir_lib.read_config(workdir), s, mesh, rules)
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=10)
  try:
    return checkpointer.restore(checkpointer.latest_step(), parts.abstract_state)[0]
  finally:
    checkpointer.close()


DISTILL = {"train_steps": 8, "regression_steps": 4, "teacher_sample_steps": 3,
           "critic_updates": 2, "warmup_steps": 1, "generator_learning_rate": 3e-2,
           "critic_learning_rate": 1e-2, "log_every": 4}


def distill_cli(teacher, workdir, cache, *faults_flags, wait=True):
  """The distillation CLI through tests/faults.py (its slow source when asked), with a shared
  persistent compilation cache: the later runs reuse the first one's executables."""
  flags = [f"--config.distill.{k}={v}" for k, v in DISTILL.items()]
  cmd = [sys.executable, "tests/faults.py", "--distill", *faults_flags, "--config", TINY,
         "--workdir", str(workdir), f"--config.distill.teacher_workdir={teacher}",
         "--config.data.height=32", "--config.data.width=32", "--config.data.frames=5",
         "--config.checkpoint.every=4", *flags]
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  if not wait:  # its log to a file: a pipe nobody reads would block the run once full
    with open(f"{workdir}.log", "w") as log:
      return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
  r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
  assert r.returncode == 0, r.stderr[-3000:]
  return r


@pytest.fixture(scope="module")
def distilled(teacher, tmp_path_factory):
  """8 generator updates (regression warm start for 4, then DMD), checkpoints every 4: a run
  killed (SIGKILL, from outside) once step 5 is logged, while batch 7 is read (steps 5-6 done,
  only step 4 saved), then restarted; and an uninterrupted run, alongside the killed one (2
  cores: each mostly compiles or waits).
  -> (config, uninterrupted workdir, killed workdir)."""
  tmp = tmp_path_factory.mktemp("distilled")
  cache, clean, killed = tmp / "xla_cache", tmp / "clean", tmp / "killed"
  uninterrupted = distill_cli(teacher, clean, cache, wait=False)
  proc = distill_cli(teacher, killed, cache, "--slow_from_step=7", "--delay_s=5", wait=False)
  faults.wait_for_logged_step(proc, killed, 5, timeout=1200)
  proc.send_signal(signal.SIGKILL)
  assert proc.wait(timeout=60) == -9
  assert uninterrupted.wait(timeout=1200) == 0, open(f"{clean}.log").read()[-3000:]
  assert [e["step"] for e in metrics_lib.read_loss_log(str(killed))] == [1, 2, 3, 4, 5]
  r = distill_cli(teacher, killed, cache)
  assert "stale lock" in r.stderr
  config = distill_config(teacher, **DISTILL)
  return config, str(clean), str(killed)


def test_distillation_loss_decreases_and_resumes_exactly(distilled):
  """The restarted run ends bit-identical to the uninterrupted one: losses, both LoRAs, both
  optimisers, RNG; the warm start's loss falls as it fits the teacher's samples."""
  config, clean, broken = distilled
  losses = metrics_lib.read_loss_log(clean)
  assert metrics_lib.read_loss_log(broken) == losses
  assert [e["step"] for e in losses] == list(range(1, 9))
  regression = [e["loss"] for e in losses[:4]]
  assert regression[-1] < 0.7 * regression[0], regression
  assert all(np.isfinite(e["loss"]) for e in losses)
  a, b = final_state(clean, config), final_state(broken, config)
  assert int(a["step"]) == 8 and set(a) == {"step", "lora", "critic", "opt", "rng"}
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_student_restores_on_its_teacher(distilled, teacher):
  """load_run(student) = the teacher's weights (backbone + identity LoRA) + the trained step
  LoRA, with the few-step, unguided sampling settings of its config.json."""
  config, clean, _ = distilled
  student, t = load_run(clean), load_run(teacher)
  assert student.model.cfg.video_lora_rank == 8 and t.model.cfg.video_lora_rank == 0
  frozen_s = nnx.state(student.model, nnx.Not(VideoLoRAParam))
  for x, y in zip(jax.tree.leaves(frozen_s), jax.tree.leaves(nnx.state(t.model))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  trained = final_state(clean, config)["lora"]
  for x, y in zip(jax.tree.leaves(nnx.state(student.model, VideoLoRAParam)),
                  jax.tree.leaves(trained)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  s = settings_from_config(student.config)
  assert (s.steps, s.cfg, s.solver, inference.forward_passes(s)) == (4, 1.0, "fewstep", 4)


def test_a_moved_teacher_is_named_in_one_error(distilled, tmp_path):
  """A student whose teacher was moved or deleted: the error says it is the teacher's checkpoint
  (and which config field names it) that cannot be restored."""
  import shutil
  _, clean, _ = distilled
  student = tmp_path / "student"
  shutil.copytree(clean, student)
  config = json.loads((student / "config.json").read_text())
  config["distill"]["teacher_checkpoint"] = str(tmp_path / "moved" / "checkpoints" / "2")
  (student / "config.json").write_text(json.dumps(config))
  with pytest.raises(ckpt_lib.RunError, match=r"few-step student of the teacher .*moved.*"
                     r"config\.distill\.teacher_checkpoint.*no such checkpoint folder"):
    load_run(str(student))


def test_generate_samples_the_student_in_four_unguided_steps(distilled, tmp_path, capsys):
  from PIL import Image
  from wildactor_jax import generate
  _, clean, _ = distilled
  face = tmp_path / "face.png"
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 24, 3), np.uint8)).save(face)
  out = tmp_path / "clip.mp4"
  assert generate.main(["--workdir", clean, "--prompt", PROMPT, "--face", str(face), "--out",
                        str(out), "--steps", "4", "--cfg", "1"]) == 0
  line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert line["steps"] == 4 and os.path.exists(out)
  assert generate.main(["--workdir", clean, "--prompt", PROMPT, "--face", str(face), "--out",
                        str(tmp_path / "bad.mp4"), "--steps", "0"]) == 2
  assert "steps 0" in capsys.readouterr().err and not (tmp_path / "bad.mp4").exists()


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "wildactor_jax.distill", *args], cwd=ROOT,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                        text=True, timeout=300)


@pytest.mark.parametrize("flags, message", [
    (["--config.distill.teacher_workdir=T", "--config.distill.critic_updates=0"],
     "config.distill.critic_updates = 0"),
    (["--config.distill.no_such_field=1"], "no_such_field"),
    (["--config.distill.steps=four"], "steps"),
])
def test_bad_flags_are_one_line_errors(tmp_path, flags, message):
  r = _cli("--config", TINY, "--workdir", str(tmp_path / "w"), *flags)
  assert r.returncode == 2, r.stderr[-2000:]
  lines = [l for l in r.stderr.strip().splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and message in lines[0], r.stderr[-2000:]
  assert not (tmp_path / "w" / "checkpoints").exists()


@pytest.mark.parametrize("distill, message", [
    ({}, "config.distill.teacher_workdir is empty"),
    ({"teacher_workdir": "/nonexistent/run"}, "/nonexistent/run"),
    ({"teacher_workdir": "T", "dmd_time_range": (0.9, 0.1)}, "config.distill.dmd_time_range"),
])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, distill, message):
  """The same checks in process (the CLI turns these errors into one line, exit status 2, as
  the subprocess cases above show)."""
  from wildactor_jax.distill import run
  from wildactor_jax.train_lib.checkpoint import RunError
  config = config_lib.load_config_file(TINY)
  config.distill.update(**distill)
  with pytest.raises((RunError, ValueError), match=message.replace(".", r"\.")):
    run.distill_and_save(config, str(tmp_path / "w"))
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_missing_config_file_is_a_one_line_error(tmp_path):
  r = _cli("--config", "configs/no_such_config.py", "--workdir", str(tmp_path / "w"))
  assert r.returncode == 2 and r.stderr.strip().startswith("error:"), r.stderr[-2000:]
  assert len(r.stderr.strip().splitlines()) == 1


def test_few_step_demo_pairs_clips_by_condition_actor_and_seed():
  """The demo's comparison goes through the benchmark's paired comparison (eval/protocol.compare,
  both axes): clips paired by (condition, actor, seed), student - teacher, intervals over actors;
  the issue's bar: forward-pass ratio, retrieval interval, dynamic degree within 10%."""
  from wildactor_jax.demo import few_step

  def clip(cond, actor, seed, hit, similarity, dynamic):
    return {"condition": cond, "target": actor, "seed": seed, "video": "v.mp4",
            "retrieved": actor if hit else "other", "identity_similarity": similarity,
            "dynamic_degree": dynamic, "prompt_adherence": 0.5}

  teacher = {"identity": {"clips": [clip("with_refs", a, s, True, 0.5, 0.2)
                                    for a in ("a", "b", "c") for s in (0, 1)]
                          + [clip("ground_truth", "a", 0, True, 0.9, 0.3)]}}
  student = {"identity": {"clips": [clip("with_refs", a, s, a != "c" or s == 0, 0.4, 0.25)
                                    for a in ("a", "b", "c") for s in (0, 1)]}}
  d = few_step.paired_differences(student, teacher)
  assert {"retrieval_top1_with_refs", "identity_similarity_with_refs",
          "dynamic_degree_with_refs", "prompt_adherence_with_refs",
          "copy_paste_with_refs"} <= set(d)
  assert not any(k.endswith(("_swapped", "_ground_truth")) for k in d)  # not in both arms
  assert d["retrieval_top1_with_refs"]["mean"] == pytest.approx(-1 / 6)
  assert d["retrieval_top1_with_refs"]["groups"] == 3
  assert d["identity_similarity_with_refs"]["mean"] == pytest.approx(-0.1)
  assert d["dynamic_degree_with_refs"]["b"] == pytest.approx(0.25)  # b: the student
  assert d["prompt_adherence_with_refs"]["mean"] == pytest.approx(0.0)
  assert d["copy_paste_with_refs"]["mean"] is None  # a figure neither arm scored
  rows = {"teacher": {"forward_passes": 50, "dynamic_degree_with_refs": 0.2},
          "student": {"forward_passes": 4, "dynamic_degree_with_refs": 0.25}}
  c = few_step.checks(rows["student"], rows["teacher"], d)
  assert c["forward_pass_ratio"] == 12.5 and c["retrieval_within_teacher"] is True
  assert c["dynamic_degree_ratio"] == pytest.approx(1.25) and c["done"] is True
  rows["student"]["dynamic_degree_with_refs"] = 0.17  # 15% below the teacher's
  c = few_step.checks(rows["student"], rows["teacher"], d)
  assert c["dynamic_degree_kept"] is False and c["done"] is False
  del rows["student"]["dynamic_degree_with_refs"]  # not measured: not passed
  assert few_step.checks(rows["student"], rows["teacher"], d)["done"] is False
