"""WildActor's identity branch: AIPA asymmetry, padding, the K/V cache, LoRA-only training, I-RoPE."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from wildactor_jax.models import irope
from wildactor_jax.models.config import ModelConfig
from wildactor_jax.models.loading import FROZEN, create_model
from wildactor_jax.models.transformer import References

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = dict(dim=64, ffn_dim=96, num_heads=2, num_layers=3, in_channels=8, out_channels=8,
            text_dim=16, freq_dim=32)


def make(lora_rank=4, seed=0, **kw):
  model = create_model(ModelConfig(**BASE, lora_rank=lora_rank, **kw), seed=seed)
  if lora_rank:  # non-zero LoRA-B so the adapters actually act in these tests
    lora = nnx.state(model, nnx.LoRAParam)
    lora = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(7), x.shape), lora)
    nnx.update(model, lora)
  return model


def inputs(b=2, t=3, h=4, w=6, r=3, seed=0):
  rng = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(rng.standard_normal(s, dtype=np.float32))
  refs = References(f(b, r, h, w, 8), jnp.asarray(rng.integers(0, 2, (b, r)), jnp.int32),
                    jnp.asarray([[True, False, True], [True, True, True]][:b]))
  return f(b, t, h, w, 8), jnp.asarray([300.0, 800.0][:b]), f(b, 5, 16), refs


def test_no_valid_references_is_exactly_the_backbone():
  x, t, text, refs = inputs()
  backbone = make(lora_rank=0)
  model = make(lora_rank=4)
  nnx.update(model, nnx.state(backbone, FROZEN))  # the same frozen weights, plus adapters
  base = backbone(x, t, text)
  np.testing.assert_array_equal(model(x, t, text), base)
  none_valid = refs._replace(mask=jnp.zeros_like(refs.mask))
  np.testing.assert_allclose(model(x, t, text, references=none_valid), base, rtol=0, atol=1e-6)


def test_video_never_influences_references_and_references_influence_video():
  x, t, text, refs = inputs()
  model = make()
  out, states = model(x, t, text, references=refs, return_reference_states=True)
  out2, states2 = model(x + 1.0, t * 0.5, text + 1.0, references=refs,
                        return_reference_states=True)
  assert states.shape[0] == BASE["num_layers"]
  np.testing.assert_array_equal(states, states2)  # every layer, bit-identical
  bumped = refs._replace(latents=refs.latents.at[1, 0].add(1.0))
  diff = jnp.abs(model(x, t, text, references=bumped) - out)
  assert float(diff[1].max()) > 1e-3  # a valid reference of sample 1 moves sample 1's video
  assert float(diff[0].max()) == 0.0  # and nothing of sample 0


def test_symmetric_ablation_lets_video_reach_references():
  x, t, text, refs = inputs()
  model = make(aipa=False)
  _, s1 = model(x, t, text, references=refs, return_reference_states=True)
  _, s2 = model(x + 1.0, t, text, references=refs, return_reference_states=True)
  assert float(jnp.abs(s1[-1] - s2[-1]).max()) > 1e-4
  with pytest.raises(ValueError, match="aipa=True"):
    model.encode_references(refs, (3, 2, 3))


def test_invalid_padding_references_change_nothing():
  x, t, text, refs = inputs()
  model = make()
  out = model(x, t, text, references=refs)
  rng = np.random.default_rng(5)
  junk = jnp.asarray(rng.standard_normal((2, 2, 4, 6, 8), dtype=np.float32)) * 10
  # Interleave padding between real references: order must not matter, only validity.
  padded = References(
      jnp.concatenate([junk[:, :1], refs.latents, junk[:, 1:]], axis=1),
      jnp.concatenate([jnp.ones((2, 1), jnp.int32), refs.types, jnp.zeros((2, 1), jnp.int32)], 1),
      jnp.concatenate([jnp.zeros((2, 1), bool), refs.mask, jnp.zeros((2, 1), bool)], 1))
  np.testing.assert_allclose(model(x, t, text, references=padded), out, rtol=1e-5, atol=1e-6)


def test_reference_cache_matches_uncached_forward():
  x, t, text, refs = inputs()
  model = make()
  cache = model.encode_references(refs, (3, 2, 3))
  assert cache.k.shape == (BASE["num_layers"], 2, 3 * 6, 2, 32)
  np.testing.assert_allclose(model(x, t, text, reference_cache=cache),
                             model(x, t, text, references=refs), rtol=1e-5, atol=1e-6)


def test_one_optimiser_step_changes_only_lora():
  x, t, text, refs = inputs()
  model = make()
  before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
  opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.LoRAParam)

  def loss_fn(m):
    return jnp.mean(jnp.square(m(x, t, text, references=refs) - x))

  grads = nnx.grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
  opt.update(model, grads)
  after = nnx.to_pure_dict(nnx.state(model))
  lora_paths = {p for p, _ in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam))}
  changed = set()
  for path, _ in nnx.to_flat_state(nnx.state(model)):
    a, b = before, after
    for p in path:
      a, b = a[p], b[p]
    if not np.array_equal(a, np.asarray(b)):
      changed.add(path)
  assert changed and changed <= lora_paths
  assert any("down" in p for p in changed) and any("up" in p for p in changed)


def test_reference_ffn_lora_keeps_aipa_and_reshapes_the_references():
  """lora_targets with o / ffn_in / ffn_out: still exactly the backbone without references, the
  video still never reaches the references, the cache still matches; the FFN adapters act."""
  x, t, text, refs = inputs()
  targets = ("q", "k", "v", "o", "ffn_in", "ffn_out")
  backbone = make(lora_rank=0)
  model = make(lora_targets=targets)
  nnx.update(model, nnx.state(backbone, FROZEN))
  none_valid = refs._replace(mask=jnp.zeros_like(refs.mask))
  np.testing.assert_allclose(model(x, t, text, references=none_valid), backbone(x, t, text),
                             rtol=0, atol=1e-6)
  out, states = model(x, t, text, references=refs, return_reference_states=True)
  _, states2 = model(x + 1.0, t * 0.5, text + 1.0, references=refs, return_reference_states=True)
  np.testing.assert_array_equal(states, states2)
  np.testing.assert_allclose(model(x, t, text, reference_cache=model.encode_references(
      refs, (3, 2, 3))), out, rtol=1e-5, atol=1e-6)
  blocks = model.blocks  # stacked over layers
  assert set(blocks.attn1.lora) == {"q", "k", "v", "o"}
  assert set(blocks.ref_ffn_lora) == {"ffn_in", "ffn_out"}
  assert blocks.ref_ffn_lora["ffn_in"].up.shape == (BASE["num_layers"], 4, BASE["ffn_dim"])
  without_ffn = make(lora_targets=("q", "k", "v", "o"))
  nnx.update(without_ffn, nnx.state(backbone, FROZEN))
  nnx.update(without_ffn.blocks.attn1.lora, nnx.state(blocks.attn1.lora))  # same attention set
  k_ffn = model.encode_references(refs, (3, 2, 3)).k
  k_plain = without_ffn.encode_references(refs, (3, 2, 3)).k
  np.testing.assert_array_equal(k_plain[0], k_ffn[0])  # layer 0's keys come before any FFN
  assert float(jnp.abs(k_plain[-1] - k_ffn[-1]).max()) > 1e-4
  with pytest.raises(ValueError, match="model.lora_targets"):
    ModelConfig(**BASE, lora_rank=4, lora_targets=("q", "norm"))


def test_lora_off_means_frozen_weights_for_references():
  assert not nnx.state(make(lora=False), nnx.LoRAParam)
  assert nnx.state(make(lora=True), nnx.LoRAParam)


def test_irope_positions_exact():
  types = jnp.asarray([[0, 1, 0, 1, 1]])
  mask = jnp.asarray([[True, True, True, True, False]])
  pos = np.asarray(irope.reference_positions(types, mask, (24, 15, 26), (1, 2)))
  per_ref = pos.reshape(5, 2, 3)
  # faces 0, 1 at T+4, T+8; bodies 0, 1 at T+128, T+132; spatial starts at (H, W) = (15, 26)
  assert per_ref[:, 0, 0].tolist()[:4] == [28, 152, 32, 156]
  assert per_ref[0].tolist() == [[28, 15, 26], [28, 15, 27]]
  # other offsets/stride from the config
  pos2 = np.asarray(irope.reference_positions(types, mask, (5, 2, 3), (2, 1), face_offset=1,
                                              body_offset=10, stride=2)).reshape(5, 2, 3)
  assert pos2[:4, 0, 0].tolist() == [6, 15, 8, 17]
  assert pos2[0, :, 1:].tolist() == [[2, 3], [3, 3]]
  # the ablation: every reference on the video's own range (t=0, rows/cols from 0)
  off = np.asarray(irope.reference_positions(types, mask, (24, 15, 26), (1, 2), irope=False))
  assert off.reshape(5, 2, 3)[:, :, 0].max() == 0 and off.reshape(5, 2, 3)[3].tolist() == [
      [0, 0, 0], [0, 0, 1]]


def test_irope_beyond_table_is_an_error():
  with pytest.raises(ValueError, match="beyond the RoPE table"):
    irope.reference_positions(jnp.zeros((1, 6), jnp.int32), jnp.ones((1, 6), bool),
                              (900, 4, 4), (4, 4))


def test_params_cli_counts_paper_setting():
  out = subprocess.run([sys.executable, "-m", "wildactor_jax.params", "--config",
                        os.path.join(REPO, "configs", "wildactor_wan22_5b.py")],
                       capture_output=True, text=True, cwd=REPO, check=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  counts = json.loads(out.stdout.strip().splitlines()[-1])
  assert counts["frozen"] == 4_999_787_712
  assert counts["trainable"] == 70_778_880
  assert counts["total"] == 4_999_787_712 + 70_778_880


def test_jittered_positions_span_the_reference_range_and_keep_frames_regular():
  from wildactor_jax.models import rope
  grid, span = (3, 4, 5), 147
  pos = np.asarray(rope.jittered_video_positions(jax.random.key(0), 64, grid, span))
  assert pos.shape == (64, 3 * 4 * 5, 3) and pos.dtype == np.int32
  frames = pos.reshape(64, 3, 20, 3)
  t = frames[:, :, 0, 0]
  assert (frames[..., 0] == t[:, :, None]).all()  # one temporal position per frame
  assert (np.diff(t, axis=1) > 0).all() and t.min() >= 0 and t.max() < span
  plain = rope.video_positions(*grid).reshape(3, 20, 3)
  shift = frames[..., 1:] - plain[None, :, :, 1:]
  assert (shift == shift[:, :, :1]).all()  # each frame's grid is shifted as a whole
  assert shift.min() == 0 and shift[..., 0].max() == 4 and shift[..., 1].max() == 5
  assert t.max() > 100  # the draws reach far: I-RoPE's body references sit at T + 128


def test_position_jitter_changes_only_the_video_positions():
  """Randomised positions change the prediction; the grid's own positions passed explicitly
  are the default, exactly."""
  from wildactor_jax.models import rope
  model = make(lora_rank=0)
  x, t, text, refs = inputs()
  plain = model(x, t, text, references=refs)
  grid_pos = jnp.broadcast_to(jnp.asarray(rope.video_positions(3, 2, 3)), (2, 18, 3))
  np.testing.assert_array_equal(model(x, t, text, references=refs, video_positions=grid_pos),
                                plain)
  moved = rope.jittered_video_positions(jax.random.key(1), 2, (3, 2, 3), 20)
  assert not np.allclose(model(x, t, text, references=refs, video_positions=moved), plain)
  with pytest.raises(ValueError, match="video_positions"):
    model(x, t, text, video_positions=grid_pos[:, :5])


def test_the_train_loss_weights_the_person_tokens_only_when_asked():
  """step.flow_loss: weight 1 never reads person_mask; a weight over a mask covering every token
  normalises out; a partial mask moves the loss to the person's tokens' mean as the weight grows;
  the train step refuses a weight <= 0."""
  from wildactor_jax.train_lib import flow, step
  model = make(lora_rank=4)
  x, _, text, refs = inputs(t=3, h=4, w=6)
  batch = {"video_latents": x, "text_embeds": text, "clean_frames": jnp.array([1, 0], jnp.int32),
           "ref_latents": refs.latents, "ref_type": refs.types, "ref_mask": refs.mask}
  t, noise = jnp.array([0.6, 0.3]), jax.random.normal(jax.random.key(5), x.shape)
  plain = step.flow_loss(model, batch, t, noise)                    # no person_mask needed
  everywhere = dict(batch, person_mask=jnp.ones(x.shape[:4], bool))
  np.testing.assert_allclose(step.flow_loss(model, everywhere, t, noise, person_weight=7.0),
                             plain, rtol=1e-5)
  person = jnp.zeros(x.shape[:4], bool).at[:, :, 1:3, 2:4].set(True)
  masked = dict(batch, person_mask=person)
  heavy = step.flow_loss(model, masked, t, noise, person_weight=1e6)
  only_person = flow.token_weights(flow.loss_frame_weights(batch["clean_frames"], 3),
                                   person, 1e6) - flow.token_weights(
      flow.loss_frame_weights(batch["clean_frames"], 3), person, 1.0)
  weighted = step.flow_loss(model, masked, t, noise, person_weight=3.0)
  assert not np.isclose(float(weighted), float(plain))
  # As the weight grows, the loss tends to the person tokens' own mean.
  t_frames = flow.frame_timesteps(t, 3, batch["clean_frames"])
  pred = model(flow.interpolate(x, noise, t_frames), flow.model_timesteps(t_frames), text,
               references=refs)
  np.testing.assert_allclose(heavy, flow.weighted_mse(pred, flow.velocity_target(x, noise),
                                                      only_person), rtol=1e-4)
  with pytest.raises(ValueError, match="person_loss_weight"):
    step.make_train_step(None, None, None, 5.0, None, None, person_weight=0.0)
