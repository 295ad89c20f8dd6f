"""A mid-size backbone for CPU throughput comparisons (`python -m wildactor_jax.bench`):
dim 512, 8 layers, ffn 2048, 4 heads of 128; 4 latent frames of 32 x 32 tokens = 4,096 video
tokens, 512 text tokens of 4,096 dims; one cached reference (1,024 tokens) for `--mode generate`.
One CPU device, batch 1.
"""
from wildactor_jax import config_lib


def get_config(arg=None):
  config = config_lib.sibling_config(__file__, "wildactor_wan22_5b.py", "cpu")
  config.model.update(dim=512, ffn_dim=2048, num_heads=4, num_layers=8, param_dtype="float32",
                      dtype="float32", remat="none", attention="xla")
  config.mesh.shape = (1, 1, 1, 1)
  config.data.update(source="random", height=1024, width=1024, frames=13, global_batch_size=1,
                     num_faces=1, num_bodies=0, r_max=1, random_examples=4)
  return config
