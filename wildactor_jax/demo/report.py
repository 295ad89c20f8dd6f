"""The demo's report: the LoRA's loss curve, the Actor-Bench figures of `python -m
wildactor_jax.evaluate` on both axes (held-out actors, with / without / swapped references,
bootstrap intervals), a picture grid (references | with references | without | swapped) and
summary.json under stable names."""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from wildactor_jax import fs, media
from wildactor_jax.eval.protocol import RETRIEVAL_NAMES

CONDITIONS = ("with_refs", "without_refs", "swapped")
# The benchmark's conditions as the report's table columns, in order.
REPORT_COLUMNS = (("ground_truth", "real clips"),
                  ("autoencoded", "real clips through the autoencoder"),
                  ("with_refs", "with refs"), ("without_refs", "without refs"),
                  ("swapped", "swapped"),
                  ("first_frame", "with refs, continued from the true first frame"))


def _loss_plot(runs: dict[str, str], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from wildactor_jax.train_lib.metrics import read_loss_log
  fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.5))
  for ax, (title, workdir) in zip(np.atleast_1d(axes), runs.items()):
    log = read_loss_log(workdir)
    steps = np.array([e["step"] for e in log])
    loss = np.array([e["loss"] for e in log])
    ax.plot(steps, loss, alpha=0.3, label="per step")
    if len(loss) >= 10:
      k = max(5, len(loss) // 30)
      ax.plot(steps[k - 1:], np.convolve(loss, np.ones(k) / k, "valid"), label=f"mean of {k}")
    ax.set(title=title, xlabel="step", ylabel="rectified-flow loss")
    ax.legend()
  fig.tight_layout()
  import io
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  plt.close(fig)
  buf.seek(0)
  media.write_png(path, Image.open(buf))


def _strip(video_path: str, frames: int = 3) -> np.ndarray:
  video = media.read_mp4(video_path)
  idx = np.linspace(0, len(video) - 1, frames).round().astype(int)
  return np.concatenate([video[i] for i in idx], axis=1)


def picture_grid(raw: str, evaluation: dict, path: str, actors: int = 6) -> list[str]:
  """One row per held-out actor: its references (front face, front and side body), then three
  frames of each generated clip whose identity target is that actor: with its references,
  without references (same prompt and seed), and swapped (another actor's prompt and seed with
  this actor's references). Returns the actors shown."""
  rows, shown = [], []
  by = {}
  for clip in evaluation["clips"]:
    if clip["condition"] in CONDITIONS and int(clip["seed"]) == 0:
      by.setdefault(clip["target"], {})[clip["condition"]] = clip["video"]
  for actor in evaluation["held_out_actors"]:
    clips = by.get(actor, {})
    if len(clips) < len(CONDITIONS):
      continue
    given = next(c.get("refs", []) for c in evaluation["clips"]
                 if c["condition"] == "with_refs" and c["target"] == actor)
    images = [np.asarray(Image.open(r).convert("RGB")) for r in given if fs.exists(r)]
    size = media.read_mp4(clips["with_refs"]).shape[1]
    images = [np.asarray(Image.fromarray(im).resize((size, size))) for im in images]
    gap = np.full((size, 4, 3), 255, np.uint8)
    parts = [np.concatenate(images, axis=1), gap]
    for cond in CONDITIONS:
      parts += [_strip(clips[cond]), gap]
    rows.append(np.concatenate(parts[:-1], axis=1))
    shown.append(actor)
    if len(shown) == actors:
      break
  if rows:
    grid = np.concatenate([np.pad(r, ((2, 2), (0, 0), (0, 0)), constant_values=255) for r in rows])
    big = Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST)
    media.write_png(path, big)
  return shown


def _ci(summary: dict, key: str) -> str:
  value, ci = summary.get(key), summary.get(key + "_ci95")
  if value is None or value != value:
    return "n/a"
  return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{value:.2f}"


def over_time_table(evaluation: dict) -> list[str]:
  """Markdown lines: per condition (a row), each sampled frame's own retrieval top-1 (a column),
  from the benchmark's `identity_over_time`; [] when it was not scored."""
  over = evaluation.get("identity_over_time") or {}
  rows = [(heading, over[c]) for c, heading in REPORT_COLUMNS if c in over]
  if not rows:
    return []
  frames = rows[0][1]["frame_index"]
  return ["| condition | " + " | ".join(f"frame {i}" for i in frames) + " |",
          "| --- |" + " --- |" * len(frames)] + [
      f"| {heading} | " + " | ".join("n/a" if v is None else f"{v:.2f}"
                                     for v in entry["retrieval_top1"]["mean"]) + " |"
      for heading, entry in rows if entry["frame_index"] == frames]


def write_report(out: str, raw: str, wildactor_run: str, build: dict, evaluation: dict,
                 stage_s: dict, total_s: float, quick: bool, story: dict | None = None) -> dict:
  from wildactor_jax.train_lib.metrics import read_loss_log
  _loss_plot({"WildActor reference LoRA (frozen pretrained backbone)": wildactor_run},
             os.path.join(out, "loss_curves.png"))
  log = read_loss_log(wildactor_run)
  first_last = {"wildactor": (float(np.mean([e["loss"] for e in log[:20]])),
                              float(np.mean([e["loss"] for e in log[-20:]])))} if log else {}
  bench = evaluation.get("summary", {})
  shown = picture_grid(raw, evaluation, os.path.join(out, "identity_grid.png"))
  diag = evaluation.get("diagnostics", {})
  summary = dict(bench, quick=quick, total_s=round(total_s, 1), stages_s=stage_s, build=build,
                 loss_first20_last20=first_last,
                 held_out_actors=len(evaluation.get("held_out_actors", [])), story=story)
  # Columns: condition -> heading; the first-frame diagnostic only when it was scored.
  columns = [c for c in REPORT_COLUMNS if c[0] != "first_frame"
             or "retrieval_top1_first_frame" in bench]
  per_condition = lambda name, key: (name, [key.format(c) for c, _ in columns])
  identity_rows = [("identity retrieval top-1", [RETRIEVAL_NAMES[c] for c, _ in columns])]
  identity_rows += [per_condition(f"identity similarity ({b})", f"identity_similarity_{b}_{{}}")
                    for b in ("front", "side", "back")]
  identity_rows += [per_condition("attribute accuracy", "attribute_accuracy_{}"),
                    per_condition("temporal consistency", "temporal_consistency_{}")]
  prompt_rows = [per_condition("prompt adherence", "prompt_adherence_{}"),
                 per_condition("  motion read right", "motion_accuracy_{}"),
                 per_condition("  camera move read right", "camera_accuracy_{}"),
                 per_condition("  frames at the intended view (+-45 deg)", "yaw_accuracy_{}"),
                 per_condition("copy-paste (+1 copy of a reference, -1 the real frame)", "copy_paste_{}"),
                 per_condition("dynamic degree (motion / the real clip's)", "dynamic_degree_{}"),
                 per_condition("yaw error (deg)", "yaw_error_{}"),
                 per_condition("yaw to nearest reference view (deg)", "yaw_to_reference_{}")]
  table = lambda rows: [
      "| figure | " + " | ".join(h for _, h in columns) + " |",
      "| --- |" + " --- |" * len(columns)] + [
      f"| {name} | " + " | ".join(_ci(bench, k) for k in keys) + " |" for name, keys in rows]
  lines = [
      "# WildActor demo report (CPU, toy scale)", "",
      f"Run {'(--quick smoke test: numbers are meaningless) ' if quick else ''}took "
      f"{summary['total_s']:.0f} s. Stages (s): " +
      ", ".join(f"{k.split(' ', 1)[1]} {v:.0f}" for k, v in stage_s.items()) + ".", "",
      f"Data: {build.get('written', '?')} clips written, skipped {build.get('skipped', {})}; "
      "splits by actor, so the held-out actors below were never trained on. Prompts say the "
      "start view, the motion and the camera move, never the appearance: an actor's appearance "
      "reaches the model through its references, which are unlike the clips (other poses, "
      "views, scales and places; crops of the actor's other clips).", "",
      "## Training", "", "![losses](loss_curves.png)", "",
      "Mean loss, first 20 steps -> last 20: " + "; ".join(
          f"{k} {a:.3f} -> {b:.3f}" for k, (a, b) in first_last.items()) + ". The frozen "
      "backbone and the video autoencoder are the shipped pretrained ones "
      "(`wildactor_jax/demo/assets/`, re-created by `python -m wildactor_jax.demo "
      "--from-scratch`).", "",
      "## Held-out actors (Actor-Bench at our scale): both axes", "",
      f"{summary['held_out_actors']} held-out actors, 2 seeds; mean [bootstrap 95% interval over "
      f"identities]. Chance retrieval: {_ci(bench, 'chance')}; chance prompt adherence "
      f"{bench.get('chance_prompt_adherence', float('nan')):.2f}. Swapped: another actor's "
      "prompt and seed with this actor's references (retrieval counts the clip that retrieves "
      "the references' actor). Identity is scored against a gallery of other renders of the "
      "actor (never an image given as a reference), each frame against the view the probe reads "
      "from it; the embedder and the probes were trained on the training actors' real renders "
      "only (`wildactor_jax/eval/`). Real clips through the autoencoder: the held-out clips "
      "encoded and decoded by the run's video autoencoder, the most a generator working in its "
      "latent space can reach.", "", "### Identity", "", *table(identity_rows), ""]
  over_time = over_time_table(evaluation)
  if over_time:
    lines += ["### Identity along the clip", "",
              "Retrieval top-1 of each sampled frame alone (mean over clips): where identity is "
              "lost, at once in the first generated frames or by drift along the clip. Frame 0 "
              "of the first-frame condition is the given (autoencoded) frame.", "",
              *over_time, ""]
  lines += ["### Prompt and motion", "", *table(prompt_rows), ""]
  effect = [(name, f"reference_effect_{key}") for name, key in (
      ("identity retrieval top-1", "retrieval_top1"), ("identity similarity", "identity_similarity"),
      ("prompt adherence", "prompt_adherence"), ("copy-paste", "copy_paste"),
      ("dynamic degree", "dynamic_degree")) if f"reference_effect_{key}" in bench]
  if effect:
    lines += ["### What the references change (paired)", "",
              "With references minus without, clip by clip on the same actor, prompt, seed and "
              "noise; mean [paired bootstrap 95% interval over identities]. An interval that "
              "excludes 0 is an effect of the references.", "",
              "| figure | with - without |", "| --- | --- |",
              *[f"| {name} | {_ci(bench, key)} |" for name, key in effect], ""]
  fid = {k: bench.get(f"fidelity_{k}") for k in ("real_split", "autoencoded") + CONDITIONS +
                                                      ("first_frame",)}
  lines += ["Sample fidelity (Fréchet distance on the embedder's features to real held-out "
            "frames; lower is closer): " + ", ".join(
                f"{k} {v:.3f}" for k, v in fid.items() if isinstance(v, (int, float))) +
            " (real_split: two halves of the real frames, the floor).", ""]
  if diag:
    lines += ["Diagnostics without sampling (held-out flow loss): " + json.dumps(
        {k: v for k, v in diag.items() if "loss" in k}), ""]
  if shown:
    lines += ["## Pictures", "", "Each row: the references given (face, bodies) | with "
              "references | without | swapped; three frames each (seed 0).", "",
              "![identity grid](identity_grid.png)", ""]
  if story:
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"
    lines += [
        "## A story: one actor across shots", "",
        f"Held-out actor {story['actor']}, three shots (cut, continue, cut) rendered by "
        "`python -m wildactor_jax.story` on one reference cache ([video](story.mp4), [contact "
        "sheet](story.png)). Similarity of each shot to the references (view-aware, the "
        "benchmark's embedder) and of shots to each other:", "",
        "| shot | to references | | pair | shot to shot |", "| --- | --- | --- | --- | --- |"]
    pairs = story["shot_to_shot"]
    for i, row in enumerate(story["shot_to_references"]):
      pair = pairs[i] if i < len(pairs) else None
      lines.append(f"| {i + 1} | {fmt(row['mean'])} | | "
                   + (f"{pair['pair'][0] + 1}-{pair['pair'][1] + 1} | {fmt(pair['mean'])} |"
                      if pair else " | |"))
    lines += ["", f"{story['frames']} frames; {story['s_per_video_second']:.1f} s of CPU time per "
              "second of video.", ""]
  fs.atomic_write_text(os.path.join(out, "report.md"), "\n".join(lines))
  fs.atomic_write_json(os.path.join(out, "summary.json"), summary, default=float)
  return summary
