"""Generation settings from an experiment config (config.data for the clip, config.sample for
the sampler), with per-call overrides."""
from __future__ import annotations

from wildactor_jax.inference import GenerationSettings


def settings_from_config(config, **overrides) -> GenerationSettings:
  """GenerationSettings from config.data.{frames, height, width} and config.sample.{steps, cfg,
  shift, solver, guide_references, cfg_interval}; an override that is None keeps the config's
  value."""
  s = GenerationSettings(
      frames=int(config.data.frames), height=int(config.data.height),
      width=int(config.data.width), steps=int(config.sample.steps), cfg=float(config.sample.cfg),
      shift=float(config.sample.shift), solver=str(config.sample.solver),
      guide_references=bool(config.sample.get("guide_references", False)),
      cfg_interval=tuple(float(v) for v in config.sample.get("cfg_interval", (0.0, 1.0))))
  given = {k: v for k, v in overrides.items() if v is not None}
  return GenerationSettings(**{**s.__dict__, **given})
