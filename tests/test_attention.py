"""Every attention implementation computes the same thing: softmax over the first kv_length keys."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wildactor_jax.models import attention as attn


def reference(q, k, v, lengths):
  s = np.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(q.shape[-1])
  s = np.where(np.arange(k.shape[1])[None, None, None] < lengths[:, None, None, None], s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bnqk,bknd->bqnd", p, v)


def rand(*shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("lq", [300, 1300])
def test_xla_attention_matches_dense_chunked_or_not(lq):
  """Up to DENSE_QUERIES queries one dense call; beyond, balanced query chunks (1,300 -> 6 of
  224, the padded tail sliced off) under one loop."""
  q, k, v = rand(2, lq, 2, 16), rand(2, 200, 2, 16, seed=1), rand(2, 200, 2, 16, seed=2)
  lengths = np.array([200, 57], np.int32)
  args = (jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(lengths))
  out = attn.attention(*args)
  np.testing.assert_allclose(out, reference(q, k, v, lengths), rtol=1e-5, atol=1e-5)
  looped = "scan" in str(jax.make_jaxpr(attn.attention)(*args))
  assert looped == (lq > attn.DENSE_QUERIES)


def test_balanced_chunk_pads_least():
  assert [attn.balanced_chunk(n) for n in (8, 333, 1280, 1300, 5120)] == [8, 168, 256, 224, 256]


def test_splash_attention_interpreted_matches_dense():
  q, k, v = rand(1, 130, 2, 128), rand(1, 140, 2, 128, seed=1), rand(1, 140, 2, 128, seed=2)
  lengths = np.array([99], np.int32)
  out = attn.attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(lengths),
                       implementation="splash")
  np.testing.assert_allclose(out, reference(q, k, v, lengths), rtol=2e-4, atol=2e-4)


def test_aipa_attention_is_two_dense_calls():
  qv, kv_, vv = rand(1, 12, 2, 16), rand(1, 12, 2, 16, seed=1), rand(1, 12, 2, 16, seed=2)
  qr, kr, vr = rand(1, 8, 2, 16, seed=3), rand(1, 8, 2, 16, seed=4), rand(1, 8, 2, 16, seed=5)
  lengths = np.array([4], np.int32)
  vid, ref = attn.aipa_attention(*map(jnp.asarray, (qv, kv_, vv, qr, kr, vr)), jnp.asarray(lengths))
  np.testing.assert_allclose(ref[:, :4], reference(qr, kr, vr, lengths)[:, :4], rtol=1e-5, atol=1e-5)
  cat = lambda a, b: np.concatenate([a, b], 1)
  np.testing.assert_allclose(vid, reference(qv, cat(kv_, kr), cat(vv, vr), lengths + 12),
                             rtol=1e-5, atol=1e-5)


def test_unknown_implementation_is_an_error():
  x = jnp.zeros((1, 4, 1, 8))
  with pytest.raises(ValueError, match="expected one of"):
    attn.attention(x, x, x, implementation="flash9000")


def test_splash_tiles_shrink_to_short_sequences_and_bad_sizes_are_an_error():
  from wildactor_jax.models import splash
  assert splash.tiles(27280, 36640, (1024, 2048, 1024)) == (1024, 2048, 1024)
  assert splash.tiles(16, 600, (1024, 2048, 1024)) == (128, 640, 640)  # 1024 does not divide 640
  assert splash.block_sizes_for("v6e-64") == splash.block_sizes_for("v6e:8x8") == (1024, 2048, 1024)
  assert splash.block_sizes_for("8xh100") == splash.DEFAULT_BLOCK_SIZES
  with pytest.raises(ValueError, match="model.splash_block_sizes"):
    splash.tiles(128, 128, (512, 512, 384))


def test_splash_block_sizes_do_not_change_the_result():
  q, k, v = rand(1, 300, 2, 32), rand(1, 520, 2, 32, seed=1), rand(1, 520, 2, 32, seed=2)
  lengths = np.array([401], np.int32)
  out = attn.attention(*map(jnp.asarray, (q, k, v, lengths)), implementation="splash",
                       block_sizes=(256, 512, 256))
  np.testing.assert_allclose(out, reference(q, k, v, lengths), rtol=1e-5, atol=1e-5)


def test_fit_spec_drops_the_axes_a_dimension_does_not_divide():
  from jax.sharding import PartitionSpec as P
  from wildactor_jax.sharding import fit_spec
  sizes = {"data": 2, "fsdp": 4, "context": 3, "tensor": 2}
  spec = P(("data", "fsdp"), "context", "tensor", None)
  assert fit_spec(spec, (8, 9, 4, 16), sizes) == spec
  assert fit_spec(spec, (2, 8, 3, 16), sizes) == P("data", None, None, None)
