"""The CPU demo: the tiny WildActor model (random frozen weights) trained for a few hundred steps.

It is meant to train on the synthetic actors rendered by data/ and encoded by the data pipeline
(config.data.source = "records", config.data.records = their encoded records). Until those
records are wired in, it uses the random-batch source (Gaussian latents and text states with the
pipeline's batch keys), which exercises every part of the step but teaches the model nothing.

    python -m wildactor_jax.train --config configs/demo_tiny.py --workdir /tmp/demo
"""
import importlib.util
import os

import ml_collections


def _main_config(arg):
  """configs/wildactor_wan22_5b.py's get_config (loaded by path: configs/ is not a package)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wildactor_wan22_5b.py")
  spec = importlib.util.spec_from_file_location("wildactor_wan22_5b", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def get_config(arg=None):
  del arg
  config = _main_config("tiny")
  config.data.source = "random"  # "records" once the synthetic actors' records are encoded
  config.data.global_batch_size = 8  # a multiple of 8 so it also runs on 8 host devices
  config.data.random_examples = 256
  config.data.text_len = 16          # toy prompts: 16 text-encoder states
  config.train.steps = 200
  config.train.warmup_steps = 20
  config.train.learning_rate = 1e-3
  config.train.log_every = 20
  config.train.eval_every = 100
  config.train.eval_batches = 2
  config.train.profile_steps = 0   # no profiler trace in the demo
  config.checkpoint.every = 50
  config.checkpoint.keep = 2
  # Test hooks: poison the batch of this step with NaN / SIGKILL the process after this step.
  config.debug = ml_collections.ConfigDict(dict(nan_at_step=-1, crash_at_step=-1))
  return config
