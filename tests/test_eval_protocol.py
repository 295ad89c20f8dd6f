"""The benchmark on real renders: the identity embedder retrieves held-out actors well above
chance against a gallery that holds no reference image; the prompt probes read camera move and
yaw of held-out clips well above chance and sit at chance on noise; hand-made "generated" folders
(a pasted reference, a frozen clip, another actor's clip) scored end to end through the CLI get
the figures they must; bad input is refused with exit status 2 and nothing written."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from wildactor_jax import media
from wildactor_jax.eval import adherence, embedder, generated, metrics, probes, protocol, raw

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRACTION = 0.25  # 48 actors -> about 12 held out (actor_hash rule)
PROBE_CFG = probes.ProbeConfig(size=32, frames=9, steps=300)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval") / "raw"
  subprocess.run([sys.executable, "data/synthetic_actors.py", "--out", str(root), "--actors",
                  "48", "--clips-per-actor", "2", "--size", "32", "--frames", "9"],
                 cwd=REPO, check=True, capture_output=True)
  ds = raw.load(str(root))
  held_out = raw.held_out(ds.actors, FRACTION)
  train = [a for a in ds.actors if a not in held_out]
  net = protocol.fit_embedder(ds, train, seed=0)
  probe = protocol.fit_probes(ds, train, PROBE_CFG, seed=0)
  return ds, held_out, net, probe


def test_gallery_never_holds_a_reference(data):
  ds, held_out, _, _ = data
  for a in ds.actors:
    refs = {r.path for region in ("face", "body") for r in ds.references(a, region)}
    gallery = {r.path for r in ds.gallery(a)}
    assert refs and gallery and not refs & gallery


def test_held_out_retrieval_well_above_chance(data):
  ds, held_out, net, _ = data
  assert len(held_out) >= 8
  gallery = {a: embedder.embed(net, np.stack([raw.read_image(r.path) for r in ds.gallery(a)]))
             for a in held_out}
  clips = [(embedder.embed(net, raw.read_video(c.video)), a) for a in held_out
           for c in ds.clips_of(a)]
  top1 = metrics.retrieval_top1([c for c, _ in clips], [a for _, a in clips], gallery).mean()
  chance = 1.0 / len(held_out)
  assert top1 >= 2.5 * chance, (top1, chance)
  # The embedder never saw a held-out actor: its training classes are the others only.
  assert net.num_classes == len(ds.actors) - len(held_out)


def test_probes_read_held_out_clips_and_sit_at_chance_on_noise(data):
  ds, held_out, _, probe = data
  clips = [c for a in held_out for c in ds.clips_of(a)]
  read = probes.predict(probe, [raw.read_video(c.video) for c in clips])
  motion = np.mean([m == c.motion for m, c in zip(read["motion"], clips)])
  camera = np.mean([m == c.camera for m, c in zip(read["camera"], clips)])
  yaw = np.mean([adherence.yaw_accuracy(y, probes.resample_yaws(c.yaws, PROBE_CFG.frames))
                 for y, c in zip(read["yaw"], clips)])
  # 72 training clips of 32 px teach the camera move and the view (chance 0.33 and 0.25); the
  # motion of a figure a few pixels tall needs the corpus: the shipped probes' test
  # (test_demo_assets.py) holds the motion head to its figure on unseen actors.
  assert camera > 0.6 and yaw > 0.33, (motion, camera, yaw)
  # Noise clips with the held-out clips' labels: the probe's reading carries no information.
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 255, (len(clips) * 4, 9, 32, 32, 3)).astype(np.uint8)
  labels = [c for c in clips for _ in range(4)]
  read = probes.predict(probe, noise)
  motion = np.mean([m == c.motion for m, c in zip(read["motion"], labels)])
  yaw = np.mean([adherence.yaw_accuracy(y, probes.resample_yaws(c.yaws, PROBE_CFG.frames))
                 for y, c in zip(read["yaw"], labels)])
  assert motion < 0.45 and yaw < 0.45, (motion, yaw)


def test_probe_save_load_round_trip(data, tmp_path):
  ds, held_out, _, probe = data
  video = raw.read_video(ds.clips_of(held_out[0])[0].video)
  again = probes.load(probes.save(probe, str(tmp_path / "p.npz")))
  np.testing.assert_array_equal(probes.predict(again, [video])["yaw"],
                                probes.predict(probe, [video])["yaw"])
  with pytest.raises(ValueError, match="e.npz"):
    probes.load(embedder.save(data[2], str(tmp_path / "e.npz")))


def fake_generated(ds, held_out, folder):
  """Hand-made clips whose scores are known, each following actor A's clip `seed` prompt:
  with_refs   = A's first given reference pasted into every frame (a copy-paste);
  swapped     = B's own clip (B's references given: the clip follows its references);
  without_refs = A's source clip frozen on its first frame (no motion)."""
  os.makedirs(folder / "clips")
  rows = []
  for i, a in enumerate(held_out):
    b = held_out[(i + 1) % len(held_out)]
    given = {x: [{"path": os.path.relpath(p, ds.root), "type": t, "yaw": y}
                 for p, t, y in generated.benchmark_references(ds, x, 2, 2)] for x in (a, b)}
    for seed in (0, 1):
      src = ds.clips_of(a)[seed]
      video = raw.read_video(src.video)
      ref = np.asarray(Image.fromarray(raw.read_image(os.path.join(ds.root, given[a][0]["path"])))
                       .resize(video.shape[1:3][::-1]))
      clips = {"with_refs": (np.repeat(ref[None], len(video), 0), a),
               "swapped": (raw.read_video(ds.clips_of(b)[seed].video), b),
               "without_refs": (np.repeat(video[:1], len(video), 0), None)}
      for cond, (frames, refs_actor) in clips.items():
        rel = f"clips/{a}_{cond}_{seed}.mp4"
        media.write_mp4(str(folder / rel), list(frames), fps=8)
        rows.append({"video": rel, "condition": cond, "actor_id": a, "refs_actor": refs_actor,
                     "seed": seed, "source_video": os.path.relpath(src.video, ds.root),
                     "refs": given[refs_actor] if refs_actor else []})
  (folder / "generated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_cli_scores_a_generated_folder(data, tmp_path):
  ds, held_out, net, probe = data
  fake_generated(ds, held_out, tmp_path / "gen")
  emb = embedder.save(net, str(tmp_path / "embedder.npz"))
  prb = probes.save(probe, str(tmp_path / "probes.npz"))
  out = tmp_path / "eval.json"
  from wildactor_jax import evaluate
  assert evaluate.main(["--raw", ds.root, "--generated", str(tmp_path / "gen"), "--embedder",
                        emb, "--probes", prb, "--test-fraction", str(FRACTION),
                        "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  s = result["summary"]
  chance = 1.0 / len(held_out)
  assert s["chance"] == pytest.approx(chance)
  # The pasted reference: a copy (CP near +1), no motion, and not what the prompt asked.
  assert s["copy_paste_with_refs"] > 0.8
  assert s["dynamic_degree_with_refs"] < 0.05
  assert s["prompt_adherence_with_refs"] < s["prompt_adherence_real"] - 0.1
  # Real clips: the ceiling of prompt adherence, CP -1 against their own frames.
  assert s["prompt_adherence_real"] > s["chance_prompt_adherence"] + 0.15
  assert s["copy_paste_ground_truth"] == pytest.approx(-1.0)
  assert s["dynamic_degree_ground_truth"] == pytest.approx(1.0)
  # Swapped: B's real clip follows B's references and is far from a copy of them (its "truth" is
  # A's source clip, another scene, so its CP sits near 0 rather than at -1).
  assert s["retrieval_top1_swapped_follows_refs"] >= 2.5 * chance
  assert s["copy_paste_swapped"] < s["copy_paste_with_refs"] - 0.5
  # The frozen clip: no motion, no copy of the references.
  assert s["dynamic_degree_without_refs"] < 0.05 and s["copy_paste_without_refs"] < 0.0
  lo, hi = s["retrieval_top1_swapped_follows_refs_ci95"]
  assert lo <= s["retrieval_top1_swapped_follows_refs"] <= hi
  assert result["identity"]["per_condition"]["with_refs"]["seeds"] == [0, 1]
  # Frame by frame, the real clips retrieve their actor well above chance along the whole clip.
  over = result["identity"]["identity_over_time"]
  assert set(over) >= {"ground_truth", "with_refs", "without_refs", "swapped"}
  assert min(over["ground_truth"]["retrieval_top1"]["mean"]) >= 2 * chance
  for name in ("fidelity_with_refs", "fidelity_real_split", "attribute_accuracy_with_refs",
               "temporal_consistency_with_refs", "identity_similarity_front_with_refs",
               "yaw_error_with_refs", "yaw_to_reference_with_refs",
               "reference_effect_identity_similarity", "reference_effect_retrieval_top1"):
    assert name in s, name
  lo, hi = s["reference_effect_copy_paste_ci95"]
  # The pasted reference against the frozen real frame: references make the clip a copy.
  assert 0.5 < lo <= s["reference_effect_copy_paste"] <= hi
  # Paired comparison of two results: a result against itself differs by exactly 0.
  clips = result["identity"]["clips"]
  same = protocol.compare(clips, clips, "swapped")
  assert same["retrieval_top1"]["mean"] == 0.0 and same["copy_paste"]["ci95"] == [0.0, 0.0]


def test_identity_over_time_finds_where_identity_is_lost(data, tmp_path):
  """A real clip of actor A whose second half is actor B's real clip: frame by frame, the first
  half retrieves A and the second does not, where the pooled retrieval gives one answer for the
  whole clip; identity_over_time averages the frames over clips of a condition."""
  ds, held_out, net, probe = data
  scorer = protocol.Scorer(ds, net, probe, held_out)
  clips = protocol.clip_list(ds, [], held_out)
  scored = [(c, scorer.score(c)) for c in clips]
  # A: the actor whose real clip this embedder reads best frame by frame; B: another actor.
  real_a, whole = max(scored, key=lambda cs: np.mean(cs[1]["frame_retrieved"]))
  a = real_a["target"]
  real_b = next(c for c in clips if c["target"] != a)
  b = real_b["target"]
  assert a != b
  pixels_a, pixels_b = scorer.video(real_a["video"]), scorer.video(real_b["video"])
  half = len(pixels_a) // 2
  spliced = scorer.add_video("spliced", np.concatenate([pixels_a[:half], pixels_b[half:]]))
  row = scorer.score(dict(real_a, condition="spliced", video=spliced))
  b_as_a = scorer.score(dict(real_b, target=a))  # does each of B's frames retrieve A?
  idx = np.asarray(row["frame_index"])
  assert idx[0] == 0 and idx[-1] == len(pixels_a) - 1
  assert row["frame_index"] == whole["frame_index"]
  hits = np.asarray(row["frame_retrieved"], float)
  # Each spliced frame is scored alone, exactly as in the clip it came from.
  expected = np.where(idx < half, whole["frame_retrieved"], b_as_a["frame_retrieved"])
  np.testing.assert_array_equal(hits, expected.astype(float))
  assert hits[idx < half].mean() >= 0.5 and hits[idx >= half].mean() <= 0.25, hits
  # Over clips of a condition: the mean of each frame position (here A's clip and B's, both
  # asked to be A), with an interval; the spliced condition is its one clip.
  over = protocol.identity_over_time([whole, row, b_as_a, dict(whole, target=b)])
  assert over["spliced"]["retrieval_top1"]["mean"] == hits.tolist()
  gt = over[protocol.GROUND_TRUTH]
  assert gt["frame_index"] == row["frame_index"]
  np.testing.assert_allclose(gt["retrieval_top1"]["mean"], (
      2 * np.asarray(whole["frame_retrieved"], float) + b_as_a["frame_retrieved"]) / 3)
  for mean, (lo, hi) in zip(gt["identity_similarity"]["mean"], gt["identity_similarity"]["ci95"]):
    assert lo <= mean <= hi


def test_autoencoded_condition_is_the_latent_space_ceiling(data):
  """Real clips through a lossless autoencoder score exactly as the real clips; through one that
  keeps only each frame's mean colour, identity is lost (retrieval at chance level) and the
  frames are far from real ones (Fréchet)."""
  ds, held_out, net, probe = data

  class Lossless:  # the autoencoder interface, latents = pixels
    temporal_factor, spatial_factor = 4, 4
    encode = decode = staticmethod(lambda x: x)

  lossless = generated.roundtrip(Lossless())
  clip = raw.read_video(ds.clips_of(held_out[0])[0].video)
  np.testing.assert_array_equal(lossless(clip), clip)
  np.testing.assert_array_equal(lossless(clip[:6]), clip[:6])  # padded to 1 + 4k and cut back
  flat = lambda pixels: np.broadcast_to(pixels.mean(axis=(1, 2), keepdims=True).round(),
                                        pixels.shape).astype(np.uint8)
  same = protocol.score(ds, net, probe, [], held_out, roundtrip=lossless)["summary"]
  lost = protocol.score(ds, net, probe, [], held_out, roundtrip=flat)["summary"]
  for key in ("retrieval_top1", "identity_similarity", "prompt_adherence", "copy_paste"):
    gt, ae = (f"{key}_ground_truth", f"{key}_autoencoded") if key != "retrieval_top1" else (
        "retrieval_top1_ground_truth", "retrieval_top1_autoencoded")
    assert same[ae] == pytest.approx(same[gt], abs=1e-6), key
  assert same["retrieval_top1_autoencoded"] > 0.5
  assert lost["retrieval_top1_autoencoded"] < same["retrieval_top1_autoencoded"] - 0.3
  assert lost["identity_similarity_autoencoded"] < same["identity_similarity_autoencoded"] - 0.3
  assert lost["fidelity_autoencoded"] > 5 * same["fidelity_autoencoded"]


def test_cli_autoencoder_flag(data, tmp_path):
  """--autoencoder FILE scores the real clips through that learned autoencoder."""
  from wildactor_jax import evaluate
  from wildactor_jax.models import video_autoencoder
  ds, held_out, net, probe = data
  fake_generated(ds, held_out, tmp_path / "gen")
  ae = video_autoencoder.save(video_autoencoder.init(video_autoencoder.AutoencoderConfig(
      stem=8, width=8, latent_width=8, z_dim=4)), str(tmp_path / "ae.npz"))
  emb = embedder.save(net, str(tmp_path / "embedder.npz"))
  prb = probes.save(probe, str(tmp_path / "probes.npz"))
  out = tmp_path / "eval.json"
  out.write_text("an earlier report")  # replaced only because --overwrite asks for it
  assert evaluate.main(["--raw", ds.root, "--generated", str(tmp_path / "gen"), "--embedder",
                        emb, "--probes", prb, "--test-fraction", str(FRACTION),
                        "--autoencoder", ae, "--out", str(out), "--overwrite"]) == 0
  s = json.loads(out.read_text())["summary"]
  assert 0.0 <= s["retrieval_top1_autoencoded"] <= 1.0 and "fidelity_autoencoded" in s
  assert "prompt_adherence_autoencoded_ci95" in s


def test_cli_bad_input_exit_2_nothing_written(data, tmp_path, capsys):
  from wildactor_jax import evaluate
  ds, held_out, _, _ = data
  cases = [["--raw", str(tmp_path / "nope")],
           ["--raw", ds.root, "--generated", str(tmp_path / "empty")],
           ["--raw", ds.root, "--generated", str(tmp_path / "gen"), "--seeds", "0"]]
  fake_generated(ds, held_out, tmp_path / "gen")
  bad = tmp_path / "badgen"
  shutil.copytree(tmp_path / "gen", bad)
  (bad / "generated.jsonl").write_text('{"video": "clips/x.mp4", "condition": "odd"}\n')
  cases.append(["--raw", ds.root, "--generated", str(bad)])
  cases.append(["--raw", ds.root, "--generated", str(tmp_path / "gen"), "--autoencoder",
                str(tmp_path / "missing.npz")])
  for extra in cases:
    out = tmp_path / "eval.json"
    assert evaluate.main(["--out", str(out), *extra]) == 2, extra
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not out.exists()
  # An existing report is the user's: kept without --overwrite, and kept on bad input with it.
  out = tmp_path / "eval.json"
  out.write_text("an earlier report")
  for extra, named in ((["--raw", ds.root, "--generated", str(tmp_path / "gen")], "--overwrite"),
                       (["--raw", ds.root, "--generated", str(tmp_path / "gen"), "--seeds", "0",
                         "--overwrite"], "--seeds")):
    assert evaluate.main(["--out", str(out), *extra]) == 2, extra
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and named in err, err
    assert out.read_text() == "an earlier report"


def _row(condition, target, seed, similarity, retrieved):
  row = {name: 0.5 for name in protocol.FIGURES}
  row.update(condition=condition, target=target, seed=seed, identity_similarity=similarity,
             retrieved=retrieved)
  return row


def test_reference_effect_pairs_with_and_without_on_actor_and_seed():
  # Two actors, two seeds: with references every clip is 0.3 more similar, and actor b's clips
  # retrieve b only with references; a swapped clip and an unpaired clip are left out.
  rows = []
  for target in ("a", "b"):
    for seed, base in ((0, 0.1), (1, 0.2)):
      rows.append(_row("without_refs", target, seed, base, "a"))
      rows.append(_row("with_refs", target, seed, base + 0.3, target))
  rows.append(_row("swapped", "a", 0, 0.9, "a"))
  rows.append(_row("with_refs", "c", 0, 0.9, "c"))
  effect = protocol.reference_effect(rows)
  assert effect["identity_similarity"]["mean"] == pytest.approx(0.3)
  assert effect["identity_similarity"]["ci95"] == pytest.approx([0.3, 0.3])
  assert effect["identity_similarity"]["n"] == 4 and effect["identity_similarity"]["groups"] == 2
  assert effect["retrieval_top1"]["mean"] == pytest.approx(0.5)
  assert effect["prompt_adherence"]["mean"] == 0.0
  # Reversed, the effect changes sign; one arm missing, there is nothing to pair.
  flipped = [dict(r, condition={"with_refs": "without_refs", "without_refs": "with_refs"}.get(
      r["condition"], r["condition"])) for r in rows]
  assert protocol.reference_effect(flipped)["identity_similarity"]["mean"] == pytest.approx(-0.3)
  assert protocol.reference_effect([r for r in rows if r["condition"] != "without_refs"]) == {}
