"""Tiny random diffusers Wan transformers in both key layouts: the numerical oracle for tests and
for `bench --vs diffusers`. Needs the test extra (torch, diffusers); never imported at run time
by the library itself."""
from __future__ import annotations

import json
import os

import numpy as np
import torch

# diffusers name -> original Wan release name, per block module (the inverse of our converter's)
_TO_ORIGINAL_BLOCK = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o", "attn1.norm_q": "self_attn.norm_q",
    "attn1.norm_k": "self_attn.norm_k", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o",
    "attn2.norm_q": "cross_attn.norm_q", "attn2.norm_k": "cross_attn.norm_k", "norm2": "norm3",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}
_TO_ORIGINAL_TOP = {
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_proj": "time_projection.1", "proj_out": "head.head",
}


def make_wan(seed=0, **overrides):
  from diffusers import WanTransformer3DModel
  cfg = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=8,
             out_channels=8, text_dim=24, freq_dim=32, ffn_dim=48, num_layers=2,
             cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
  cfg.update(overrides)
  torch.manual_seed(seed)
  model = WanTransformer3DModel(**cfg).eval()
  with torch.no_grad():  # randomise norm affines too, so a mis-mapped norm cannot hide
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1.0 + 0.2 * torch.randn_like(p) if name.endswith("weight") else 0.2 * torch.randn_like(p))
  return model


def save_diffusers(model, folder):
  model.save_pretrained(folder, safe_serialization=True)
  return folder


def to_original_name(key: str) -> str:
  if key == "scale_shift_table":
    return "head.modulation"
  if key.startswith("blocks."):
    _, i, rest = key.split(".", 2)
    if rest == "scale_shift_table":
      return f"blocks.{i}.modulation"
    module, _, leaf = rest.rpartition(".")
    return f"blocks.{i}.{_TO_ORIGINAL_BLOCK[module]}.{leaf}"
  module, _, leaf = key.rpartition(".")
  return f"{_TO_ORIGINAL_TOP.get(module, module)}.{leaf}"


def save_original(model, folder, with_config=True):
  from safetensors.torch import save_file
  os.makedirs(folder, exist_ok=True)
  sd = {to_original_name(k): v.contiguous() for k, v in model.state_dict().items()}
  save_file(sd, os.path.join(folder, "diffusion_pytorch_model.safetensors"))
  if with_config:
    c = model.config
    with open(os.path.join(folder, "config.json"), "w") as fh:
      json.dump({"_class_name": "WanModel", "dim": c.num_attention_heads * c.attention_head_dim,
                 "num_heads": c.num_attention_heads, "ffn_dim": c.ffn_dim, "freq_dim": c.freq_dim,
                 "in_dim": c.in_channels, "out_dim": c.out_channels, "num_layers": c.num_layers,
                 "eps": c.eps, "text_len": 512}, fh)
  return folder


def torch_forward(model, latents_cl: np.ndarray, timesteps: np.ndarray, text: np.ndarray):
  """Runs diffusers on channels-last numpy input; returns channels-last numpy output."""
  x = torch.from_numpy(np.ascontiguousarray(latents_cl.transpose(0, 4, 1, 2, 3)))
  with torch.no_grad():
    out = model(x, torch.from_numpy(timesteps), torch.from_numpy(text), return_dict=False)[0]
  return out.numpy().transpose(0, 2, 3, 4, 1)
