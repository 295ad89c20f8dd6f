"""One text-padding convention for training and sampling (Wan's): prompt states zero past the
prompt's tokens, padded to text_encoder.max_length, every position attended (no text mask); and
prompt dropout puts exactly the sampler's unconditional states (the encoded "") into training."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from wildactor_jax import encode, inference
from wildactor_jax.input import batches, schema
from wildactor_jax.models import tokenizer, umt5
from wildactor_jax.train_lib.step import drop_text, flow_loss

PROMPT = "a person waves while the camera pans"
LENGTH, WIDTH = 16, 8


class SpyModel:
  """Records how it is called; returns zeros of the latents' shape."""

  class cfg:
    jnp_dtype = jnp.float32

  def __init__(self):
    self.calls = []

  def __call__(self, x, t, text, **kwargs):
    self.calls.append((np.asarray(text), sorted(kwargs)))
    return jnp.zeros_like(x)


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("text")
  tok = tokenizer.build_demo_tokenizer(sorted(set(PROMPT.split())), str(tmp / "tok.json"))
  umt5.save_random(str(tmp / "umt5"), umt5.UMT5Config(vocab_size=16, d_model=WIDTH, d_kv=4,
                                                        num_heads=2, d_ff=16, num_layers=1),
                   tokenizer_path=tok)
  return umt5.load_text_encoder(str(tmp / "umt5"), tokenizer_path=tok, text_len=LENGTH), tmp


def test_train_step_and_sampler_give_the_model_the_same_text(text_encoder):
  enc, _ = text_encoder
  embeds, mask = enc.encode([PROMPT, ""])
  n = int(mask[0].sum())
  # What a record stores (the prompt's own states) padded as the records pipeline pads them.
  stored = np.asarray(embeds[0, :n])
  padded = np.zeros((LENGTH, WIDTH), np.float32)
  padded[:n] = stored
  x = jnp.zeros((1, 2, 4, 4, 3))
  batch = {"video_latents": x, "clean_frames": jnp.zeros((1,), jnp.int32),
           "text_embeds": jnp.asarray(padded[None]), "text_mask": jnp.asarray(mask[:1]),
           "ref_latents": jnp.zeros((1, 1, 4, 4, 3)), "ref_type": jnp.zeros((1, 1), jnp.int32),
           "ref_mask": jnp.zeros((1, 1), bool)}
  train_model, sample_model = SpyModel(), SpyModel()
  flow_loss(train_model, batch, jnp.array([0.5]), jnp.ones_like(x))
  inference.guided_velocity(sample_model, x, 500.0, jnp.asarray(embeds), None, 3.0)
  (train_text, train_kwargs), = train_model.calls
  (sample_text, sample_kwargs), = sample_model.calls
  np.testing.assert_array_equal(train_text[0], sample_text[0])   # the conditional prompt
  assert "text_lengths" not in train_kwargs and "text_lengths" not in sample_kwargs
  assert not np.any(sample_text[0, n:]) and np.any(sample_text[0, :n])


def test_prompt_dropout_uses_the_samplers_unconditional_states(text_encoder, tmp_path):
  enc, _ = text_encoder
  embeds, _ = enc.encode([PROMPT, ""])
  encode.write_null_text(enc, str(tmp_path))
  config = ml_collections.ConfigDict(dict(
      data=dict(records=str(tmp_path), source="records", text_len=LENGTH),
      text_encoder=dict(max_length=LENGTH), model=dict(text_dim=WIDTH)))
  null = batches.null_text(config)
  np.testing.assert_array_equal(null, np.asarray(embeds[1]))   # == the sampler's uncond row
  text = jnp.asarray(np.stack([np.asarray(embeds[0])] * 64))
  dropped = np.asarray(drop_text(jax.random.key(0), text, jnp.asarray(null), 0.25))
  is_null = np.all(dropped == null, axis=(1, 2))
  is_prompt = np.all(dropped == np.asarray(embeds[0]), axis=(1, 2))
  assert np.all(is_null | is_prompt) and 5 <= is_null.sum() <= 30
  assert np.array_equal(np.asarray(drop_text(jax.random.key(0), text, None, 0.0)), text)


def test_text_lengths_must_agree():
  config = ml_collections.ConfigDict(dict(data=dict(text_len=16),
                                          text_encoder=dict(max_length=512)))
  with pytest.raises(ValueError, match="one length"):
    schema.text_length(config)
  missing = ml_collections.ConfigDict(dict(
      data=dict(records="/nonexistent", source="records", text_len=4),
      text_encoder=dict(max_length=4), model=dict(text_dim=8)))
  with pytest.raises(ValueError, match="null_text.npz: missing"):
    batches.null_text(missing)
