"""Stories and continuation end to end on a 2-step trained tiny run (test_generate's fixture):
one film with the shots' frames, one reference cache, the same seed the same film, continuation
sampling from the clip's re-encoded last frames (what the model got, what it added), and a
one-line error (exit 2, no output) for every bad story file."""
import contextlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from wildactor_jax import generate, inference, media, story
from wildactor_jax.eval import coherence

from test_generate import PROMPT, gen, run  # noqa: F401  (the trained tiny run fixture)

SHOTS = """
references:
  face: [face.png]
  body: [face.png]
seed: 3
shots:
  - {prompt: a person waves, camera: pan, frames: 9}
  - {prompt: a person in a red shirt waves, camera: zoom in, frames: 9, transition: continue}
  - {prompt: a person waves, frames: 5, transition: cut}
"""


def write_story(folder, text=SHOTS, name="story.yaml"):
  path = folder / name
  path.write_text(text)
  return str(path)


@pytest.fixture(scope="module")
def film(run, tmp_path_factory):
  """The 3-shot story rendered once (window 5 frames: 2 latent frames, 1 of context)."""
  workdir, face, _ = run
  tmp = tmp_path_factory.mktemp("story")
  Image.open(face).save(tmp / "face.png")
  calls = []
  original = inference.reference_cache
  inference.reference_cache = lambda *a, **k: calls.append(1) or original(*a, **k)
  printed = io.StringIO()
  try:
    out = tmp / "film.mp4"
    with contextlib.redirect_stdout(printed):
      code = story.main(["--workdir", workdir, "--story", write_story(tmp), "--out", str(out)])
  finally:
    inference.reference_cache = original
  return code, out, tmp, calls, json.loads(printed.getvalue().strip().splitlines()[-1])


def test_three_shots_make_one_film_on_one_reference_cache(film):
  code, out, tmp, calls, line = film
  assert code == 0 and len(calls) == 1
  # The summed frame count: 9 + 9 + 5. Windows of 2 latent frames, 1 of context: the first shot
  # is 3 latent frames (2 windows); the run of 18 frames needs 6 (3 more windows); the cut, 1.
  assert line["shot_frames"] == [[0, 9], [9, 18], [18, 23]] and line["frames"] == 23
  assert line["windows"] == 2 + 3 + 1 and line["s_per_video_second"] > 0
  frames = media.read_mp4(str(out))
  assert frames.shape == (9 + 9 + 5, 32, 32, 3)
  sheet = Image.open(out.with_suffix(".png"))
  assert sheet.size[1] == 32 * (1 + 3)  # the references' row, then a row per shot
  assert not [f for f in os.listdir(tmp) if f.startswith(".partial-")]


@pytest.fixture(scope="module")
def loaded(run):
  """The run restored once (library-level tests share it)."""
  from wildactor_jax.infer import encoders, load_run
  from wildactor_jax.infer.settings import settings_from_config
  r = load_run(run[0])
  vae = encoders.vae_from_config(r.config)
  s = settings_from_config(r.config)
  return r, vae, encoders.text_encoder_from_config(r.config), s


def render(loaded, story_path, seed=None):
  import dataclasses
  from wildactor_jax.infer import story as story_lib
  r, vae, text, s = loaded
  st = story_lib.load_story(story_path)
  st = st if seed is None else dataclasses.replace(st, seed=seed)
  images = [media.load_reference(p, s.height, s.width, "ref") for p in st.face + st.body]
  grid = inference.check_geometry(s, vae, tuple(r.config.model.patch_size))
  return story_lib.render(r.model, vae, text, st, images, [0] * len(st.face) + [1] * len(st.body),
                          s, grid)


def test_same_seed_same_film(film, loaded):
  _, out, tmp, _, _ = film
  again = render(loaded, str(tmp / "story.yaml"))
  assert again.shot_frames == [(0, 9), (9, 18), (18, 23)] and again.timings["windows"] == 6
  # Continued windows start from the film's own last frame, re-encoded: shot 1's second window
  # from its frame 4, the continued shot 2 from shot 1's last frame (8), then its own (12, 16).
  vae = loaded[1]
  assert len(again.contexts) == 4
  for context, frame in zip(again.contexts, (4, 8, 12, 16)):
    np.testing.assert_allclose(context, vae.encode(again.video[frame:frame + 1][None]), atol=1e-6)
  frames = media.to_uint8(again.video)
  media.write_mp4(str(tmp / "again.mp4"), frames)  # the CLI's encoder settings: same bytes
  np.testing.assert_array_equal(media.read_mp4(str(out)), media.read_mp4(str(tmp / "again.mp4")))
  other = media.to_uint8(render(loaded, str(tmp / "story.yaml"), seed=4).video)
  assert other.shape == frames.shape and not np.array_equal(other, frames)


def test_continuation_starts_from_the_clips_last_frames_reencoded(run, loaded, tmp_path,
                                                                  monkeypatch):
  """generate --continue-from (latents or mp4): the window the model samples starts from the
  VAE encoding of the clip's last frame (K = 1), kept clean; the new frames are what that window
  decodes to after it, appended to the clip's own frames; --save-latents writes the latents of
  the whole extended clip; and the new frames depend on the clip they continue."""
  import argparse
  from wildactor_jax.infer import continuation
  workdir, face, _ = run
  r, vae, text, s = loaded
  image = media.load_reference(face, s.height, s.width, "--face")
  video, _, first = inference.generate(r.model, vae, text, PROMPT, [image], [0], s,
                                       return_latents=True)
  assert first.shape[:2] == (1, 2) and video.shape[0] == 5
  np.save(tmp_path / "first.npy", first)
  windows = []  # (context, latents) of every window sampled
  sample = inference.sample_latents

  def spy(*args, **kwargs):
    out = sample(*args, **kwargs)
    windows.append((args[6], out[0]))
    return out

  monkeypatch.setattr(inference, "sample_latents", spy)
  longer = tmp_path / "longer.mp4"
  assert gen(workdir, longer, "--face", face, "--continue-from", str(tmp_path / "first.npy"),
             "--context-frames", "1", "--save-latents", "--seed", "1") == 0
  (context, window), = windows
  np.testing.assert_allclose(context, vae.encode(video[-1:][None]), atol=1e-6)
  np.testing.assert_array_equal(window[:, :1], context)  # the sampler kept it clean
  new = continuation.decode_chain(vae, window)[1:]
  # The clip decoded again, then the new frames (written by the CLI's encoder: the same bytes).
  media.write_mp4(str(tmp_path / "want.mp4"), media.to_uint8(np.concatenate([video, new])))
  frames = media.read_mp4(str(longer))
  assert frames.shape[0] == 9                              # 5 frames + 4 new
  np.testing.assert_array_equal(frames, media.read_mp4(str(tmp_path / "want.mp4")))
  saved = np.load(tmp_path / "longer.npy")
  np.testing.assert_allclose(saved, vae.encode(np.concatenate([video, new])[None]), atol=1e-5)
  # From an mp4: its own frames, then new ones read from its last frame: another clip (its
  # frames reversed) gives other new frames from the same seed.
  media.write_mp4(str(tmp_path / "first.mp4"), media.to_uint8(video))
  previous = continuation.load_context(str(tmp_path / "first.mp4"), vae, s.height, s.width)
  args = argparse.Namespace(prompt=PROMPT, context_frames=1)
  ext, _, _ = generate.continue_clip(r.model, vae, text, args, [image], [0], s, previous, None)
  assert ext.shape[0] == 9
  np.testing.assert_allclose(windows[-1][0], vae.encode(previous[0][-1:][None]), atol=1e-6)
  reverse = (previous[0][::-1], previous[1][::-1])
  other, _, _ = generate.continue_clip(r.model, vae, text, args, [image], [0], s, reverse, None)
  assert not np.allclose(other[5:], ext[5:], atol=1e-2)


@pytest.mark.parametrize("extra,message", [
    (["--continue-from", "missing.npy"], "no such file"),
    (["--continue-from", "FIRST", "--context-frames", "2"], "--context-frames 2: expected 1 .. 1"),
    (["--continue-from", "FIRST", "--height", "64", "--width", "64"], "expected 64x64"),
])
def test_bad_continuation_input_exits_2(run, capsys, tmp_path, extra, message):
  workdir, face, tmp = run
  first = tmp_path / "first.mp4"
  media.write_mp4(str(first), np.zeros((5, 32, 32, 3), np.uint8))
  extra = [str(first) if e == "FIRST" else e for e in extra]
  out = tmp_path / "x.mp4"
  assert gen(workdir, out, "--face", face, *extra) == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert err.startswith("error: ") and message in err
  assert not out.exists()


BAD = {
    "unknown top key": ("SHOTS\nmusic: loud\n", "unknown key 'music'"),
    "unknown shot key": (SHOTS.replace("camera: pan,", "camara: pan,"),
                         "shot 1: unknown key 'camara'"),
    "frames not 1+4k": (SHOTS.replace("frames: 5", "frames: 6"), "shot 3: frames 6: expected 1 + 4k"),
    "frames not an int": (SHOTS.replace("frames: 5", "frames: five"), "shot 3: frames: 'five'"),
    "missing frames": (SHOTS.replace(", frames: 5", ""), "shot 3: frames: missing"),
    "missing reference": (SHOTS.replace("body: [face.png]", "body: [gone.png]"),
                          "references: body[0] gone.png: no such file"),
    "continue first": (SHOTS.replace("camera: pan, frames: 9}", "frames: 9, transition: continue}"),
                       "shot 1: transition continue"),
    "bad camera": (SHOTS.replace("camera: zoom in", "camera: crane"), "shot 2: camera 'crane'"),
    "no prompt": (SHOTS.replace("prompt: a person waves, frames: 5", "frames: 5"),
                  "shot 3: prompt: expected a non-empty string"),
    "not yaml": ("shots: [\n", "not valid YAML"),
    "no shots": ("references: {face: [face.png]}\n", "shots: expected a non-empty list"),
    "context too long": (SHOTS + "context_frames: 2\n", "context_frames 2: expected 1 .. 1"),
}


def test_an_existing_film_is_kept_without_overwrite(film, run, capsys):
  _, out, tmp, _, _ = film
  before = out.read_bytes(), out.with_suffix(".png").read_bytes()
  assert story.main(["--workdir", run[0], "--story", str(tmp / "story.yaml"), "--out",
                     str(out)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "already exists; pass --overwrite" in err[0], err
  assert (out.read_bytes(), out.with_suffix(".png").read_bytes()) == before


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_story_file_is_one_line_and_writes_nothing(film, run, capsys, case):
  _, _, tmp, _, _ = film
  text, message = BAD[case]
  path = write_story(tmp, text.replace("SHOTS", SHOTS), name=f"bad_{case.replace(' ', '_')}.yaml")
  out = tmp / "bad" / f"{case.replace(' ', '_')}.mp4"
  assert story.main(["--workdir", run[0], "--story", path, "--out", str(out)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) >= 1 and err[-1].startswith("error: ") and message in err[-1], err[-1]
  assert not out.exists() and not out.with_suffix(".png").exists()


@pytest.mark.parametrize("frames,extra,message", [
    # 1 + 4 x 25000 frames at 32x32 need ~5 GiB to render and hold; this machine has 2.
    (100001, [], "100001 frames at 32x32 need about 4.9 GiB of memory to render and hold, and "
                 "this machine has 2.0 GiB available (the longest is shot 1: frames 100001)"),
    # A window (--frames) beyond the RoPE table, whatever the story.
    (9, ["--frames", "100001"], "--frames 100001: a window of 25001 latent frames with 1 "
                                "reference reaches RoPE position 25129"),
])
def test_too_long_is_refused_before_the_model_loads(run, capsys, tmp_path, monkeypatch, frames,
                                                    extra, message):
  """A story of 100000 frames used to load the model and denoise for hours."""
  from wildactor_jax.infer import restore, story as story_lib
  workdir, face, _ = run
  Image.open(face).save(tmp_path / "face.png")
  path = write_story(tmp_path, f"references: {{face: [face.png]}}\n"
                               f"shots:\n  - {{prompt: a person waves, frames: {frames}}}\n")
  monkeypatch.setattr(restore, "load_run", lambda *a, **k: pytest.fail("the model was loaded"))
  monkeypatch.setattr(story_lib, "available_host_bytes", lambda: 2 * 2 ** 30)
  out = tmp_path / "film.mp4"
  assert story.main(["--workdir", workdir, "--story", path, "--out", str(out), *extra]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("error: ") and message in err[-1], err[-1]
  assert not out.exists() and not out.with_suffix(".png").exists()


def test_coherence_figures_on_known_embeddings():
  rng = np.random.default_rng(0)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  refs = unit(rng.standard_normal((3, 8)))
  ref_yaws = np.array([0.0, 90.0, 180.0])
  # Shot frames equal to one reference each: similarity 1 to the references, per view bin.
  shots = [refs[[0, 0, 1]], refs[[1, 2, 2]]]
  per = coherence.shot_to_references(shots, refs, ref_yaws)
  assert [r["mean"] for r in per] == pytest.approx([1.0, 1.0])
  assert per[0]["front"] == pytest.approx(1.0) and per[0]["back"] is None
  pairs = coherence.shot_to_shot(shots, refs, ref_yaws)
  assert pairs[0]["pair"] == (0, 1) and pairs[0]["side"] == pytest.approx(1.0)
  assert pairs[0]["front"] is None                              # shot 1 never faces front
  # Drift: similarity falling linearly with the frame index gives that slope.
  sims = 1.0 - 0.01 * np.arange(20)
  d = coherence.drift(sims, segment_starts=[0, 5, 10, 15])
  assert d["slope_per_100_frames"] == pytest.approx(-1.0)
  assert d["by_segment"] == pytest.approx([np.mean(sims[i:i + 5]) for i in (0, 5, 10, 15)])
  # One story's figures: shots cut from the film by their frame ranges; drift on the film.
  film = np.concatenate(shots)
  figs = coherence.story_figures(film, [(0, 3), (3, 6)], refs, ref_yaws, segment_starts=[0, 3])
  assert figs["shot_to_shot"] == pairs and figs["drift"]["by_segment"] == pytest.approx([1, 1])
  summary = coherence.summarise([{"actor": "a", "figures": figs}, {"actor": "b", "figures": figs}])
  assert summary["shot_to_references"]["mean"]["mean"] == pytest.approx(1.0)
  assert summary["drift"]["slope_per_100_frames"]["ci95"] == pytest.approx([0.0, 0.0], abs=1e-9)


def test_benchmark_first_frame_condition_continues_the_source_clip(run, loaded, tmp_path):
  """evaluate --first-frame: each held-out actor's with-references clip again, sampled as a
  continuation of its source clip's own first frame (encoded alone, kept clean): the clip opens
  on that frame, the with-references clip of the same prompt and seed does not, and the rows
  name the condition, the actor and the source clip."""
  import subprocess
  import sys
  from wildactor_jax.eval import generated, raw
  r, vae, _, s = loaded
  root = tmp_path / "raw"
  subprocess.run([sys.executable, "data/synthetic_actors.py", "--out", str(root), "--actors", "3",
                  "--clips-per-actor", "1", "--size", str(s.width), "--frames", str(s.frames)],
                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), check=True,
                 capture_output=True)
  ds = raw.load(str(root))
  actors = ds.actors[:2]
  rows = generated.generate(run[0], ds, actors, [0, 1], str(tmp_path / "gen"), steps=2,
                            log=lambda m: None, batch=4, first_frame=True)
  by = {(x["condition"], x["actor_id"], x["seed"]): x for x in rows}
  assert sorted({x["condition"] for x in rows}) == sorted(generated.ALL_CONDITIONS)
  assert len(rows) == 2 * 2 * len(generated.ALL_CONDITIONS)
  for a in actors:
    for seed in (0, 1):
      row = by[(generated.FIRST_FRAME, a, seed)]
      assert generated.target_actor(row) == a and row["refs"]
      assert row["source_video"] == by[("with_refs", a, seed)]["source_video"]
      truth = raw.read_video(os.path.join(ds.root, row["source_video"]))[0].astype(float)
      want = media.to_uint8(vae.decode(vae.encode(truth[None, None] / 127.5 - 1.0))[0])[0]
      opened = media.read_mp4(row["video"])[0].astype(float)
      plain = media.read_mp4(by[("with_refs", a, seed)]["video"])[0].astype(float)
      assert np.abs(opened - want).mean() < 6.0  # the given frame, up to H.264
      assert np.abs(plain - want).mean() > 3 * np.abs(opened - want).mean()
