"""The one small training loop the evaluation's networks share (identity embedder, probes).

    fit(net, batch_loss, num_examples=N, steps=300, batch=64, learning_rate=3e-3, seed=0)

Adam with a cosine decay over `steps`; each step draws `batch` example indices uniformly and a
key, and minimises `batch_loss(net, indices, key)` (which gathers and augments its own batch from
arrays it closes over, so the data stays on the device). Deterministic under the seed.
"""
from __future__ import annotations

import jax
import optax
from flax import nnx


def fit(net: nnx.Module, batch_loss, *, num_examples: int, steps: int, batch: int,
        learning_rate: float, seed: int = 0, log=None, wrt=nnx.Param) -> nnx.Module:
  if num_examples < 1:
    raise ValueError("fit: no training examples")
  opt = nnx.Optimizer(net, optax.adam(optax.cosine_decay_schedule(learning_rate, steps)), wrt=wrt)

  @nnx.jit
  def step(net, opt, key):
    k_idx, k_loss = jax.random.split(key)
    idx = jax.random.randint(k_idx, (batch,), 0, num_examples)
    loss, grads = nnx.value_and_grad(lambda n: batch_loss(n, idx, k_loss))(net)
    opt.update(net, grads)
    return loss

  key = jax.random.key(seed)
  for i in range(steps):
    loss = step(net, opt, jax.random.fold_in(key, i))
    if log is not None and (i % 100 == 0 or i == steps - 1):
      log(i, float(loss))
  return net
