"""The CPU demo (`make demo`): a toy WildActor trained on the synthetic actors in minutes.

arg "" (default): WildActor itself: reference-only LoRA (rank 32) with AIPA and I-RoPE on a
  frozen toy backbone given by --config.backbone_path (the demo installs the shipped one).
arg "no_aipa" | "no_irope" | "uniform" | "describing": the ablations (see ABLATIONS below).
arg "backbone": the toy backbone's own pre-training (every parameter trained, text-to-video,
  image-to-video and continuation, no references), standing in for the pretrained Wan weights the
  real setting freezes. `python -m wildactor_jax.demo --from-scratch` runs it on a separate
  pre-training corpus (other synthetic actors: the demo's held-out actors are never in it) and
  exports the result; the repository ships that export (wildactor_jax/demo/assets/).

All read encoded synthetic-actor records (config.data.records) made with the demo's learned video
autoencoder (config.vae.path: 64 x 64 px, 17 frames -> 5 x 8 x 8 x 32 latents, Wan2.1's
geometry) and a small random UMT5 over the synthetic prompts' vocabulary (config.text_encoder.*);
`python -m wildactor_jax.demo` fills these paths in.

    python -m wildactor_jax.train --config configs/demo_tiny.py --workdir W \
        --config.data.records=R --config.backbone_path=B --config.text_encoder.path=T \
        --config.vae.path=AE.npz
"""
import ml_collections

from wildactor_jax import config_lib


ABLATIONS = ("no_aipa", "no_irope", "uniform", "describing")


def get_config(arg=None):
  stage = arg or "wildactor"
  if stage not in ("wildactor", "backbone", "distill") + ABLATIONS:
    raise ValueError(f"configs/demo_tiny.py:{arg}: expected no argument, 'backbone' or one of "
                     f"{', '.join(ABLATIONS)}")
  config = config_lib.sibling_config(__file__, "wildactor_wan22_5b.py", "tiny")
  # An 8 x 8 latent grid per frame, one token per latent pixel (patch 1): 5 x 64 video tokens and
  # 64 per reference. Tokens carry 32 latent values in 128 dims.
  config.model.update(dim=128, ffn_dim=512, num_heads=2, num_layers=6, text_dim=32,
                      lora_rank=32, in_channels=32, out_channels=32, patch_size=(1, 1, 1))
  config.vae = ml_collections.ConfigDict(dict(kind="learned", path="", z_dim=32))
  config.text_encoder.update(path="", tokenizer_path="", max_length=64)  # describing prompts
  config.data.update(source="records", records="", height=64, width=64, frames=17,
                     global_batch_size=8, r_max=4, max_faces=2, max_bodies=2, text_len=64)
  config.train.update(steps=600, warmup_steps=30, learning_rate=1e-2, log_every=25,
                      eval_every=150, eval_batches=2, profile_steps=0, trainable="lora",
                      text_dropout=0.1)
  # 64 px clips are 320 tokens: Wan's shift 5 (tuned for 480p+) leaves too few training samples
  # at low noise, where a toy model must learn to clean the last of the noise; 3 for both.
  config.flow.shift = 3.0
  config.checkpoint.update(every=150, keep=2)
  # Guidance works: training drops 10% of prompts to the empty prompt (train.text_dropout).
  # Wan's guidance scale 5; the unconditional branch drops the references too
  # (sample.guide_references), so guidance amplifies identity with the prompt.
  config.sample.update(steps=25, cfg=5.0, shift=3.0, solver="unipc", require_references=True,
                       guide_references=True, cfg_interval=(0.0, 1.0))
  # The ablations of `python -m wildactor_jax.demo --ablations`, each one change from the method:
  if stage == "no_aipa":       # symmetric attention: references also read the noisy video
    config.model.aipa = False
  elif stage == "no_irope":    # references reuse the video's positions (frame 0's grid)
    config.model.irope = False
  elif stage == "uniform":     # references drawn uniformly, not viewpoint-adaptively
    config.data.sampler = "uniform"
  # "describing" trains the method itself on data whose prompts spell out the appearance
  # (data/synthetic_actors.py --describe-appearance): identity reaches the model through text too.
  if stage == "distill":  # the demo's run -> a 4-step step LoRA (wildactor_jax/demo/few_step.py)
    config.distill.update(step_lora_rank=16, train_steps=300, critic_updates=2, warmup_steps=20,
                          generator_learning_rate=1e-3, critic_learning_rate=1e-3,
                          log_every=25, regression_steps=0)
    config.checkpoint.update(every=100)
  if stage == "backbone":
    config.model.update(lora=False, lora_rank=0)
    # Continuation without references too: the backbone (standing in for pretrained Wan, which
    # never sees references) learns to extend a clip from 1..2 clean latent frames.
    config.data.task_probs = {"t2v": 0.4, "i2v": 0.3, "vc": 0.0, "continue": 0.3}
    config.data.continue_references = False
    # i2v examples whose clean frame is a still of the person from another shot (a body
    # reference), then a cut (input/records_source.py). Off: measured under the frozen-backbone
    # LoRA, it adds flicker and no usable identity (benchmarks/results/README.md, "Round 11").
    config.data.cut_context = 0.0
    config.train.update(steps=3000, trainable="all", learning_rate=2e-3, warmup_steps=100,
                        log_every=50, eval_every=500)
    config.checkpoint.update(every=500, keep=2)
    config.sample.require_references = False
  return config
