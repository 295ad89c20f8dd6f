"""UMT5 text encoder: parity with transformers, converter key handling, tokenisation."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wildactor_jax.convert import text_encoder as conv
from wildactor_jax.convert.common import ConversionError
from wildactor_jax.models import tokenizer as tk
from wildactor_jax.models import umt5

from conftest import require_test_extra  # noqa: E402

torch = require_test_extra("torch")
transformers = require_test_extra("transformers")

WORDS = ("a man woman walks runs turns in the park street city at night day slowly quickly "
         "camera pans left right wearing red blue jacket dress smiles looks back toward").split()
PROMPTS = [
    "A man walks in the park.",
    "a woman   wearing a red dress turns left, camera pans right &amp; she smiles",
    " ".join(WORDS[i % len(WORDS)] for i in range(200)),  # > max_distance: exercises log buckets
    "zebra",  # unknown word -> <unk>
]
HF_CONFIG = dict(vocab_size=96, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=3,
                 num_decoder_layers=2, relative_attention_num_buckets=32,
                 relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
                 dropout_rate=0.0, layer_norm_epsilon=1e-6)


def _perturb_norms(model):
  """transformers initialises RMSNorm weights to 1; random scales make the test see them."""
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  """A tiny transformers UMT5EncoderModel saved as safetensors, with a tokenizer.json beside it."""
  torch.manual_seed(0)
  cfg = transformers.UMT5Config(**HF_CONFIG, attn_implementation="eager")
  model = transformers.UMT5EncoderModel(cfg).eval()
  _perturb_norms(model)
  path = str(tmp_path_factory.mktemp("hf_umt5"))
  model.save_pretrained(path)
  tk.build_demo_tokenizer(WORDS, path)
  return path, model


@pytest.fixture(scope="module")
def converted(hf_dir, tmp_path_factory):
  src, _ = hf_dir
  out = str(tmp_path_factory.mktemp("conv") / "text_encoder")
  info = conv.convert(src, out, "float32")
  return out, info


def _torch_embeds(model, ids, mask):
  with torch.no_grad():
    h = model(input_ids=torch.from_numpy(ids).long(),
              attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()
  lengths = mask.sum(1)
  keep = np.arange(ids.shape[1])[None, :] < lengths[:, None]  # Wan: trim to length, zero-pad
  return np.where(keep[..., None], h, 0.0)


def _rel_err(a, b):
  return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


def test_relative_position_bucket_matches_transformers():
  from transformers.models.umt5.modeling_umt5 import UMT5Attention
  for buckets, dist in ((32, 128), (16, 20)):
    cfg = transformers.UMT5Config(**dict(HF_CONFIG, relative_attention_num_buckets=buckets,
                                         relative_attention_max_distance=dist))
    attn = UMT5Attention(cfg, has_relative_attention_bias=True)
    rel = np.arange(-700, 701)
    want = attn._relative_position_bucket(torch.from_numpy(rel)).numpy()
    got = np.asarray(umt5.relative_position_bucket(jnp.asarray(rel), buckets, dist))
    np.testing.assert_array_equal(got, want)


def test_tokenizer_matches_transformers(tmp_path):
  path = tk.build_demo_tokenizer(WORDS, str(tmp_path))
  ours = tk.Tokenizer.from_path(str(tmp_path))
  hf = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tk.demo_tokenizer_object(WORDS), eos_token="</s>", pad_token="<pad>",
      unk_token="<unk>")
  cleaned = [tk.clean_prompt(p) for p in PROMPTS]
  for length in (512, 16):  # 16 truncates the long prompt: EOS must stay last
    ids, mask = ours(PROMPTS, length)
    ref = hf(cleaned, padding="max_length", max_length=length, truncation=True,
             add_special_tokens=True, return_tensors="np")
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"].astype(bool))
  assert tk.clean_prompt(PROMPTS[1]).endswith("right & she smiles")
  assert ids[2, -1] == ours.eos_id and mask[2].all()
  assert os.path.basename(path) == "tokenizer.json"


def test_parity_with_transformers(hf_dir, converted):
  _, model = hf_dir
  out, info = converted
  assert info["tokenizer"] == ["tokenizer.json"] and info["ignored"] == 0
  enc = umt5.load_text_encoder(out)  # finds the tokenizer copied by the converter
  embeds, mask = enc.encode(PROMPTS)
  assert embeds.shape == (4, 512, 32) and embeds.dtype == jnp.float32 and mask.shape == (4, 512)
  ids, np_mask = enc.tokenize(PROMPTS)
  np.testing.assert_array_equal(np.asarray(mask), np_mask)
  want = _torch_embeds(model, ids, np_mask)
  assert _rel_err(embeds, want) < 1e-4
  for i in range(len(PROMPTS)):  # per prompt, so the short ones are checked on their own scale
    assert _rel_err(embeds[i], want[i]) < 1e-4
  n = np_mask.sum(1)
  assert not np.asarray(embeds)[0, n[0]:].any() and np.asarray(embeds)[0, n[0] - 1].any()
  # Bucketed (shortened) runs equal the full-length run on real positions.
  unbucketed = umt5.TextEncoder(enc.model, enc.tokenizer, bucket=False)
  full = unbucketed.encode_ids(ids[:2], np_mask[:2])[0]
  np.testing.assert_allclose(np.asarray(full), np.asarray(enc.encode_ids(ids[:2], np_mask[:2])[0]),
                             rtol=1e-5, atol=1e-6)


def test_full_model_sharded_and_cli(tmp_path):
  """UMT5ForConditionalGeneration, sharded with an index: decoder keys are skipped."""
  from wildactor_jax.convert.__main__ import main
  torch.manual_seed(2)
  cfg = transformers.UMT5Config(**HF_CONFIG, attn_implementation="eager")
  model = transformers.UMT5ForConditionalGeneration(cfg).eval()
  _perturb_norms(model)
  src = str(tmp_path / "full")
  model.save_pretrained(src, max_shard_size="40KB")
  assert any(f.endswith(".index.json") for f in os.listdir(src))
  out = str(tmp_path / "out")
  assert main(["--kind", "text_encoder", "--src", src, "--out", out, "--dtype", "float32"]) == 0
  enc = umt5.load_text_encoder(out)
  assert enc.tokenizer is None
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 96, (2, 40)).astype(np.int32)
  mask = np.arange(40)[None] < np.array([[40], [7]])
  want = _torch_embeds(model.get_encoder(), ids, mask)
  assert _rel_err(enc.encode_ids(ids, mask)[0], want) < 1e-4
  with pytest.raises(ValueError, match="no tokenizer"):
    enc.encode(["a man"])


def _rewrite(src_dir, dst_dir, edit):
  from safetensors.numpy import load_file, save_file
  os.makedirs(dst_dir)
  tensors = load_file(os.path.join(src_dir, "model.safetensors"))
  edit(tensors)
  save_file(tensors, os.path.join(dst_dir, "model.safetensors"))
  with open(os.path.join(src_dir, "config.json")) as fh, \
       open(os.path.join(dst_dir, "config.json"), "w") as out:
    out.write(fh.read())
  return dst_dir


def test_missing_unknown_and_pickled_weights(hf_dir, tmp_path):
  src, _ = hf_dir
  missing = _rewrite(src, str(tmp_path / "missing"),
                     lambda t: t.pop("encoder.block.1.layer.0.SelfAttention.k.weight"))
  with pytest.raises(ConversionError, match=r"missing 1 keys.*block\.1.*SelfAttention\.k"):
    conv.convert(missing, str(tmp_path / "o1"), "float32")
  unknown = _rewrite(src, str(tmp_path / "unknown"),
                     lambda t: t.update({"encoder.block.0.extra.weight": np.zeros(3, np.float32)}))
  with pytest.raises(ConversionError, match=r"unknown 1 keys.*extra"):
    conv.convert(unknown, str(tmp_path / "o2"), "float32")
  pickled = tmp_path / "pickled"
  pickled.mkdir()
  (pickled / "config.json").write_text("{}")
  (pickled / "pytorch_model.bin").write_bytes(b"not really a pickle")
  with pytest.raises(ConversionError, match="pickled weights are refused"):
    conv.convert(str(pickled), str(tmp_path / "o3"), "float32")
  assert not os.path.exists(tmp_path / "o1") and not os.path.exists(tmp_path / "o3")


def test_truncation_and_random_checkpoint(tmp_path):
  """save_random + demo tokenizer (no torch involved), bfloat16 storage, short text_len."""
  cfg = umt5.UMT5Config(vocab_size=64, d_model=16, d_kv=4, num_heads=4, d_ff=32, num_layers=2)
  tok_path = tk.build_demo_tokenizer(WORDS, str(tmp_path / "tok" / "tokenizer.json"))
  umt5.save_random(str(tmp_path / "f32"), cfg, seed=3, tokenizer_path=tok_path)
  umt5.save_random(str(tmp_path / "bf16"), cfg, seed=3, dtype="bfloat16")
  enc = umt5.load_text_encoder(str(tmp_path / "f32"), text_len=16)
  long_prompt = " ".join(["camera pans left"] * 20)
  embeds, mask = enc.encode([long_prompt, "a man"])
  ids, _ = enc.tokenize([long_prompt, "a man"])
  assert embeds.shape == (2, 16, 16) and bool(mask[0].all()) and int(mask[1].sum()) == 3
  assert ids[0, -1] == enc.tokenizer.eos_id and ids[1, 2] == enc.tokenizer.eos_id
  assert not np.asarray(embeds)[1, 3:].any()
  bf16 = umt5.load_text_encoder(str(tmp_path / "bf16"), tokenizer_path=tok_path, text_len=16)
  assert bf16.model.embed_tokens[...].dtype == jnp.float32  # restored (cast) in the asked dtype
  assert _rel_err(bf16.encode([long_prompt, "a man"])[0], np.asarray(embeds)) < 5e-2
  low = umt5.load_text_encoder(str(tmp_path / "bf16"), dtype=jnp.bfloat16, text_len=16)
  assert low.encode_ids(ids, np.asarray(mask))[0].dtype == jnp.float32


def test_sentencepiece_backend(tmp_path):
  spm = require_test_extra("sentencepiece")
  sentences = [" ".join(WORDS[i:i + 6]) for i in range(len(WORDS) - 6)] * 4
  model_prefix = str(tmp_path / "spiece")
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_prefix=model_prefix, vocab_size=40,
      model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
  tok = tk.Tokenizer.from_path(str(tmp_path))
  sp = spm.SentencePieceProcessor(model_file=model_prefix + ".model")
  ids, mask = tok(["a man walks", "the  park"], 8)
  for row, m, text in zip(ids, mask, ["a man walks", "the park"]):
    want = (sp.encode(text)[:7] + [1])
    assert row[:len(want)].tolist() == want and m.sum() == len(want)
    assert (row[len(want):] == 0).all()


def test_sharded_restore_on_mesh(converted, hf_dir):
  """Restore onto a device mesh with logical-axis rules (8 host devices in the test command)."""
  out, _ = converted
  n = len(jax.devices())
  assert n >= 4, "needs XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/conftest.py)"
  mesh = jax.make_mesh((n // 4, 4), ("data", "model"))
  rules = [("heads", "model"), ("mlp", "model"), ("vocab", None), ("embed", None)]
  enc = umt5.load_text_encoder(out, mesh=mesh, rules=rules)
  kernel = enc.model.blocks[0].ffn.wi_0.kernel[...]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "model")
  ids, mask = enc.tokenize(PROMPTS[:2])
  want = _torch_embeds(hf_dir[1], ids, mask)
  assert _rel_err(enc.encode_ids(ids, mask)[0], want) < 1e-4
