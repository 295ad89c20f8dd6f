"""The CPU demo (`make demo`): a toy WildActor trained on the synthetic actors in minutes.

arg "" (default): WildActor itself: reference-only LoRA (rank 16) with AIPA and I-RoPE on a
  frozen toy backbone given by --config.backbone_path (the demo exports it from stage "backbone").
arg "no_aipa" | "no_irope" | "uniform" | "describing": the ablations (see ABLATIONS below).
arg "backbone": the toy backbone's own pre-training (every parameter trained, text-to-video and
  image-to-video, no references), standing in for the pretrained Wan weights the real setting
  freezes: a random frozen backbone cannot denoise, so LoRA on top of it would learn nothing.

Both read encoded synthetic-actor records (config.data.records) made with the parameter-free
pixel autoencoder (32x32, 9 frames -> 3 x 16 x 16 x 12 latents) and a small random UMT5
(config.text_encoder.*); `python -m wildactor_jax.demo` fills these paths in.

    python -m wildactor_jax.train --config configs/demo_tiny.py --workdir W \
        --config.data.records=R --config.backbone_path=B --config.text_encoder.path=T
"""
import ml_collections

from wildactor_jax import config_lib


ABLATIONS = ("no_aipa", "no_irope", "uniform", "describing")


def get_config(arg=None):
  stage = arg or "wildactor"
  if stage not in ("wildactor", "backbone") + ABLATIONS:
    raise ValueError(f"configs/demo_tiny.py:{arg}: expected no argument, 'backbone' or one of "
                     f"{', '.join(ABLATIONS)}")
  config = config_lib.sibling_config(__file__, "wildactor_wan22_5b.py", "tiny")
  # Tokens carry 2 x 2 x 12 = 48 latent values in 128 dims: a token narrower than its patch
  # (e.g. 48 channels at 64 px) cannot carry the noise through and never learns to denoise.
  config.model.update(dim=128, ffn_dim=384, num_heads=2, num_layers=4, text_dim=32,
                      lora_rank=16, in_channels=12, out_channels=12)
  # Latents normalised by the synthetic actors' pixel statistics (measured: mean 0.38, std 0.28
  # on the plain background), as the Wan VAE normalises its latents: the sampler's last residual
  # of noise is then 3.6 times smaller in pixels (see models/pixel_autoencoder.py).
  config.vae = ml_collections.ConfigDict(dict(kind="pixel", spatial_factor=2, path="",
                                              latents_mean=0.38, latents_std=0.28))
  config.text_encoder.update(path="", tokenizer_path="", max_length=48)
  config.data.update(source="records", records="", height=32, width=32, frames=9,
                     global_batch_size=8, r_max=4, max_faces=2, max_bodies=2, text_len=48)
  config.train.update(steps=400, warmup_steps=30, learning_rate=5e-3, log_every=25,
                      eval_every=200, eval_batches=2, profile_steps=0, trainable="lora",
                      text_dropout=0.1)
  # 32 px clips are 192 tokens: Wan's shift 5 (tuned for 480p+) leaves too few training samples at
  # low noise, where a toy model must learn to clean the last of the noise; 3 for both.
  config.flow.shift = 3.0
  config.checkpoint.update(every=200, keep=2)
  # Guidance works: training drops 10% of prompts to the empty prompt (train.text_dropout).
  # Wan's guidance scale 5; the unconditional branch drops the references too
  # (sample.guide_references), so guidance amplifies identity: measured on 96 actors (13 held out),
  # held-out retrieval 0.31 -> 0.46 against cfg 3 on the prompt alone. Guidance only at flow times
  # sigma >= 0.3 (sample.cfg_interval): below, it turns this toy's fine-scale errors into
  # saturated blocks; measured on the demo's data, Fréchet 2.16 -> 1.87 with retrieval 0.27 ->
  # 0.29 (benchmarks/results/identity_levers_cpu.jsonl).
  config.sample.update(steps=25, cfg=5.0, shift=3.0, solver="unipc", require_references=True,
                       guide_references=True, cfg_interval=(0.3, 1.0))
  # The ablations of `python -m wildactor_jax.demo --ablations`, each one change from the method:
  if stage == "no_aipa":       # symmetric attention: references also read the noisy video
    config.model.aipa = False
  elif stage == "no_irope":    # references reuse the video's positions (frame 0's grid)
    config.model.irope = False
  elif stage == "uniform":     # references drawn uniformly, not viewpoint-adaptively
    config.data.sampler = "uniform"
  # "describing" trains the method itself on data whose prompts spell out the appearance
  # (data/synthetic_actors.py --describe-appearance): identity reaches the model through text too.
  if stage == "backbone":
    config.model.update(lora=False, lora_rank=0)
    # Continuation without references too: the backbone (standing in for pretrained Wan, which
    # never sees references) learns to extend a clip from 1..2 clean latent frames.
    config.data.task_probs = {"t2v": 0.4, "i2v": 0.3, "vc": 0.0, "continue": 0.3}
    config.data.continue_references = False
    # lr 5e-3: at 2e-3 a toy backbone after 800 steps still samples patch-scale colour noise
    # (its one-step x0 estimates are good; the residual noise of its velocity at low t is not).
    config.train.update(steps=800, trainable="all", learning_rate=5e-3, warmup_steps=50)
    # No randomised RoPE positions (train.position_jitter, 0 here): they were meant to teach
    # this toy attention at I-RoPE's distant reference positions, but measured on this data they
    # cost more than they gave: jitter 0.5 for half the examples, retrieval 0.18-0.21 and Fréchet
    # 5.6-7.5 (with references); none, 0.27 and 2.2 (benchmarks/results/identity_levers_cpu.jsonl).
    # A real Wan never saw I-RoPE's positions either; the reference LoRA learns to read them.
    config.checkpoint.update(every=400)
    config.sample.require_references = False
  return config
