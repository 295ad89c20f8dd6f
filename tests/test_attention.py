"""Every attention implementation computes the same thing: softmax over the first kv_length keys."""
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


@pytest.mark.parametrize("lq", [300, 512])
def test_chunked_xla_attention_matches_dense(lq):
  q, k, v = rand(2, lq, 2, 16), rand(2, 200, 2, 16, seed=1), rand(2, 200, 2, 16, seed=2)
  lengths = np.array([200, 57], np.int32)
  out = attn.attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(lengths))
  np.testing.assert_allclose(out, reference(q, k, v, lengths), rtol=1e-5, atol=1e-5)


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
