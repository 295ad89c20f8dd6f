"""WildActor, the paper setting on Wan2.2-TI2V-5B: reference-only LoRA (rank 128 on q/k/v), AIPA,
I-RoPE, viewpoint-adaptive sampling of 3 face + 3 body references, 480x832, 93 frames.

arg: a mesh preset: v5p-64 (default), v6e-64, 8xh100, v5e-4, cpu; or "tiny" for the CPU test
variant (toy model, random frozen weights, random batches with the pipeline's keys). TPU presets run
the splash kernel with their generation's block sizes. Ablations: configs/ablation_*.py or
--config.model.aipa=False / --config.model.irope=False / --config.data.sampler=uniform;
long clips: --config.model.context_parallel=ulysses on a mesh with a `context` axis.
"""
import ml_collections

from wildactor_jax import config_lib
from wildactor_jax.models import splash


def get_config(arg=None):
  arg = arg or "v5p-64"
  tiny = arg == "tiny"
  config = ml_collections.ConfigDict()
  tpu = arg.startswith("v")
  config.model = config_lib.model_config(
      "tiny" if tiny else "wan22_ti2v_5b", lora_rank=8 if tiny else 128,
      param_dtype="float32" if tiny else "bfloat16", dtype="float32" if tiny else "bfloat16",
      remat="none" if tiny else "full",
      attention="splash" if tpu else ("cudnn" if arg == "8xh100" else "xla"),
      # The Pallas splash kernel's (block_q, block_kv, block_kv_compute) for this TPU generation.
      splash_block_sizes=splash.block_sizes_for(arg),
      # Sequence shards over the mesh's `context` axis: "all_gather" gathers K/V, "ulysses"
      # all-to-alls sequence <-> heads around the kernel (context degree must divide 24 heads).
      context_parallel="all_gather")
  config.mesh = config_lib.mesh_config("cpu" if tiny else arg)
  # Converted Wan2.2-TI2V-5B transformer (python -m wildactor_jax.convert); "" = random (tiny).
  config.backbone_path = ""
  config.vae = ml_collections.ConfigDict(dict(kind="wan", path=""))
  config.text_encoder = ml_collections.ConfigDict(dict(path="", tokenizer_path="", max_length=512))

  config.data = ml_collections.ConfigDict(dict(
      records="", height=64 if tiny else 480, width=64 if tiny else 832,
      frames=9 if tiny else 93, global_batch_size=2 if tiny else 64, num_faces=3, num_bodies=3,
      max_faces=5, max_bodies=5, r_max=4 if tiny else 6, random_counts=True,
      sampler="adaptive", delta=25.0, decay=0.25, debias=True,
      # The paper's task mix (t2v 0.1, i2v 0.1, vc 0.8) plus ours: continuation (a clean prefix of
      # 1..context_frames latent frames, with references), which multi-shot stories extend with.
      task_probs={"t2v": 0.1, "i2v": 0.1, "vc": 0.7, "continue": 0.1},
      context_frames=2 if tiny else 4, continue_references=True, seed=0, shuffle=True))
  # Rectified flow: x_t = (1 - t) x0 + t eps, v = eps - x0, shifted t (Wan's shift 5).
  config.flow = ml_collections.ConfigDict(dict(shift=5.0, num_train_timesteps=1000))
  config.train = ml_collections.ConfigDict(dict(
      steps=100 if tiny else 20000, learning_rate=1e-4, warmup_steps=10 if tiny else 500,
      weight_decay=0.01, b1=0.9, b2=0.999, grad_clip=1.0, seed=0, log_every=10 if tiny else 50,
      eval_every=50 if tiny else 1000, eval_timesteps=(0.25, 0.5, 0.75),
      # Prompt dropout (ours): the empty prompt's states in 10% of samples, so that classifier-
      # free guidance (sample.cfg) has an unconditional branch the model was trained on.
      text_dropout=0.1,
      # Randomised video RoPE positions for this share of examples (models/rope.py:
      # jittered_video_positions); for pre-training a backbone from scratch, 0 for WildActor.
      position_jitter=0.0,
      # The weight of the person's latent tokens in the flow loss (ours; 1 = the plain mean as
      # in the paper). Needs records encoded with --person_boxes (input/person_mask.py).
      person_loss_weight=1.0))
  config.checkpoint = ml_collections.ConfigDict(dict(every=25 if tiny else 500, keep=3))
  # guide_references (ours): the unconditional branch of guidance also drops the references, so
  # cfg amplifies identity with the prompt (inference.GenerationSettings). cfg_interval: the flow
  # times (sigma) at which guidance applies; (0, 1) guides every step, as Wan does.
  config.sample = ml_collections.ConfigDict(dict(steps=50, cfg=5.0, shift=5.0, solver="unipc",
                                                 require_references=True,
                                                 guide_references=True, cfg_interval=(0.0, 1.0)))
  # Few-step distillation of a finished run (python -m wildactor_jax.distill; docs/method.md):
  # DMD2-style, 4 Euler steps at timesteps [1000, 750, 500, 250] shifted by sample.shift, no CFG
  # (the Self-Forcing / LightX2V recipe for Wan: rank-64 LoRAs, Adam betas (0, 0.999), 5 critic
  # updates per generator update); the teacher's own sample.cfg is the real score's guidance.
  config.distill = ml_collections.ConfigDict(dict(
      teacher_workdir="", steps=4, step_lora_rank=8 if tiny else 64, step_lora_scale=1.0,
      step_lora_targets=("q", "k", "v", "o", "ffn_in", "ffn_out"),
      train_steps=6 if tiny else 2000, critic_updates=2 if tiny else 5,
      generator_learning_rate=1e-4, critic_learning_rate=1e-4, warmup_steps=1 if tiny else 50,
      grad_clip=1.0, b1=0.0, b2=0.999, weight_decay=0.0,
      # DMD noise levels: u uniform in this range, then shifted (DMD2 / Self-Forcing: 0.02-0.98).
      dmd_time_range=(0.02, 0.98),
      # Regression warm start: the first N generator updates fit the teacher's own samples from
      # the same noise (its guided sampler, teacher_sample_steps steps (0: its sample.steps): 100
      # passes per pair at 50 steps, so 0 at 5B scale). real_guidance -1: the teacher's sample.cfg.
      regression_steps=0, teacher_sample_steps=0, real_guidance=-1.0, seed=0,
      log_every=2 if tiny else 50, profile_steps=0))
  if tiny:  # CPU tests: random batches with the pipeline's keys, a multiple of 8 host devices
    config.data.update(source="random", global_batch_size=8, random_examples=256, text_len=16)
    config.text_encoder.max_length = 16
    config.train.update(steps=200, warmup_steps=20, learning_rate=1e-3, log_every=20,
                        eval_every=100, eval_batches=2, profile_steps=0)
    config.checkpoint.update(every=50, keep=2)
  return config
