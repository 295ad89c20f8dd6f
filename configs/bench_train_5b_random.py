"""Benchmark: the WildActor 5B train step on one GPU with random batches (throughput, MFU).

The main config's 8xh100 model settings (bf16, cuDNN attention, full remat) on a 1-device mesh,
random frozen weights (no backbone_path) and the random-batch source with the paper's shapes
(480x832, 93 frames, 6 references, 512 text states). Measures speed only: it learns nothing.

arg: the global batch size (default 1).

    python -m wildactor_jax.train --config configs/bench_train_5b_random.py:1 --workdir W
"""
from wildactor_jax import config_lib


def get_config(arg=None):
  config = config_lib.sibling_config(__file__, "wildactor_wan22_5b.py", "8xh100")
  config.mesh.shape = (1, 1, 1, 1)
  config.data.source = "random"
  config.data.global_batch_size = int(arg or 1)
  config.data.random_examples = 16
  config.data.task_probs = dict(vc=1.0)  # every sample carries its 6 references
  config.train.update(steps=14, warmup_steps=2, log_every=6, eval_every=0, profile_steps=0)
  config.checkpoint.update(every=1000, keep=1)
  return config
