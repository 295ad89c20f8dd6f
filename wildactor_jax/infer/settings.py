"""Generation settings from an experiment config (config.data for the clip, config.sample for
the sampler), with per-call overrides, checked before any model is loaded."""
from __future__ import annotations

import math

from wildactor_jax.inference import GenerationSettings
from wildactor_jax.sampling import SOLVERS

# Seeds become a jax.random.key, which keeps 32 bits: 2**32 would sample exactly as seed 0.
MAX_SEED = 2 ** 32 - 1
_SOURCE = {"frames": "config.data.frames", "height": "config.data.height",
           "width": "config.data.width", "seed": "the seed"}


def settings_from_config(config, **overrides) -> GenerationSettings:
  """GenerationSettings from config.data.{frames, height, width} and config.sample.{steps, cfg,
  shift, solver, guide_references, cfg_interval}; an override that is None keeps the config's
  value. Every value is checked (`check_settings`): a bad one is a one-line ValueError naming
  the flag (--cfg) when it was given, else the config field (config.sample.cfg)."""
  s = GenerationSettings(
      frames=int(config.data.frames), height=int(config.data.height),
      width=int(config.data.width), steps=int(config.sample.steps), cfg=float(config.sample.cfg),
      shift=float(config.sample.shift), solver=str(config.sample.solver),
      guide_references=bool(config.sample.get("guide_references", False)),
      cfg_interval=tuple(float(v) for v in config.sample.get("cfg_interval", (0.0, 1.0))))
  given = {k: v for k, v in overrides.items() if v is not None}
  s = GenerationSettings(**{**s.__dict__, **given})
  check_settings(s, given)
  return s


def check_settings(s: GenerationSettings, given=()) -> None:
  """One-line ValueErrors for values no sampler can use. NaN or inf in cfg or shift would
  otherwise run the whole sampler and write an all-black video; a negative cfg pushes away
  from the prompt; shift <= 0 is no noise schedule; seeds past 32 bits alias smaller ones."""
  name = lambda k: (f"--{k.replace('_', '-')}" if k in given else
                    _SOURCE.get(k, f"config.sample.{k}"))

  def number(k, low, *, above=False, integer=False, high=None):
    v = getattr(s, k)
    ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
          and (v > low if above else v >= low) and (high is None or v <= high)
          and (not integer or float(v).is_integer()))
    if not ok:
      kind = "an integer" if integer else "a finite number"
      bound = f"> {low}" if above else f">= {low}"
      raise ValueError(f"{name(k)} {v}: expected {kind} {bound}"
                       + (f" and <= {high}" if high is not None else ""))

  number("steps", 1, integer=True)
  number("cfg", 0)  # 1: the conditional velocity alone; below 1 it mixes in less of the prompt
  number("shift", 0, above=True)
  number("seed", 0, integer=True, high=MAX_SEED)
  if s.solver not in SOLVERS:
    raise ValueError(f"{name('solver')} {s.solver!r}: expected one of {', '.join(SOLVERS)}")
  lo_hi = tuple(s.cfg_interval)
  if (len(lo_hi) != 2 or not all(math.isfinite(v) for v in lo_hi)
      or not 0.0 <= lo_hi[0] <= lo_hi[1] <= 1.0):
    raise ValueError(f"{name('cfg_interval')} {lo_hi}: expected (lo, hi) with "
                     "0 <= lo <= hi <= 1 (flow times)")
