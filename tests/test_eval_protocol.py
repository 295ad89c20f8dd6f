"""The identity embedder and the benchmark on real renders: held-out retrieval well above chance,
hand-made "generated" folders (ground-truth clips reused) scored end to end through the CLI, and
bad input refused with exit status 2 and nothing written."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from wildactor_jax.eval import embedder, generated, metrics, protocol, raw

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRACTION = 0.34  # 36 actors -> 8 held out (actor_hash rule)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval") / "raw"
  subprocess.run([sys.executable, "data/synthetic_actors.py", "--out", str(root), "--actors",
                  "36", "--clips-per-actor", "2", "--size", "32", "--frames", "9"],
                 cwd=REPO, check=True, capture_output=True)
  ds = raw.load(str(root))
  held_out = raw.held_out(ds.actors, FRACTION)
  net = protocol.fit_embedder(ds, [a for a in ds.actors if a not in held_out], seed=0)
  return ds, held_out, net


def test_held_out_retrieval_well_above_chance(data):
  ds, held_out, net = data
  assert len(held_out) >= 6
  gallery = {a: embedder.embed(net, np.stack([raw.read_image(r.path) for r in ds.gallery(a)]))
             for a in held_out}
  clips = [(embedder.embed(net, raw.read_video(c.video)), a) for a in held_out
           for c in ds.clips_of(a)]
  top1 = metrics.retrieval_top1([c for c, _ in clips], [a for _, a in clips], gallery).mean()
  chance = 1.0 / len(held_out)
  assert top1 >= 2.5 * chance, (top1, chance)
  # The embedder never saw a held-out actor: its training classes are the others only.
  assert net.num_classes == len(ds.actors) - len(held_out)


def test_embedder_save_load_round_trip(data, tmp_path):
  ds, held_out, net = data
  frames = raw.read_video(ds.clips_of(held_out[0])[0].video)
  path = embedder.save(net, str(tmp_path / "e.npz"))
  np.testing.assert_array_equal(embedder.embed(embedder.load(path), frames),
                                embedder.embed(net, frames))
  (tmp_path / "bad.npz").write_bytes(b"nope")
  with pytest.raises(ValueError, match="bad.npz"):
    embedder.load(str(tmp_path / "bad.npz"))


def fake_generated(ds, held_out, folder):
  """with_refs = the actor's own clips; swapped (A's prompt, B's refs) = B's clips, so the
  clip follows its references; without_refs = the next actor's clips (identity lost)."""
  os.makedirs(folder / "clips")
  rows = []
  for i, a in enumerate(held_out):
    b = held_out[(i + 1) % len(held_out)]
    for seed in (0, 1):
      for cond, shown, refs_actor in (("with_refs", a, a), ("swapped", b, b),
                                      ("without_refs", b, None)):
        src = ds.clips_of(shown)[seed]
        rel = f"clips/{a}_{cond}_{seed}.mp4"
        shutil.copy(src.video, folder / rel)
        rows.append({"video": rel, "condition": cond, "actor_id": a, "refs_actor": refs_actor,
                     "seed": seed, "source_video": os.path.relpath(src.video, ds.root)})
  (folder / "generated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_cli_scores_a_generated_folder(data, tmp_path):
  ds, held_out, net = data
  fake_generated(ds, held_out, tmp_path / "gen")
  emb = embedder.save(net, str(tmp_path / "embedder.npz"))
  out = tmp_path / "eval.json"
  from wildactor_jax import evaluate
  assert evaluate.main(["--raw", ds.root, "--generated", str(tmp_path / "gen"), "--embedder",
                        emb, "--test-fraction", str(FRACTION), "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  s = result["summary"]
  chance = 1.0 / len(held_out)
  assert s["chance"] == pytest.approx(chance)
  # The same clips as ground truth: identical figures for with_refs and ground truth.
  assert s["retrieval_top1_with_refs"] == pytest.approx(s["retrieval_top1_ground_truth"])
  assert s["retrieval_top1_swapped_follows_refs"] >= 2.5 * chance
  assert s["retrieval_top1_without_refs"] <= chance + 0.1
  lo, hi = s["retrieval_top1_with_refs_ci95"]
  assert lo <= s["retrieval_top1_with_refs"] <= hi
  assert s["identity_similarity_with_refs"] > s["identity_similarity_without_refs"]
  assert result["identity"]["per_condition"]["with_refs"]["seeds"] == [0, 1]
  for name in ("fidelity_with_refs", "fidelity_real_split", "attribute_accuracy_with_refs",
               "temporal_consistency_with_refs", "identity_similarity_front_with_refs"):
    assert name in s, name
  # Real frames as "generated" sit about as far from real frames as two real splits do.
  assert s["fidelity_with_refs"] < 3 * s["fidelity_real_split"] + 1.0


def test_cli_bad_input_exit_2_nothing_written(data, tmp_path, capsys):
  from wildactor_jax import evaluate
  ds, held_out, _ = data
  cases = [["--raw", str(tmp_path / "nope")],
           ["--raw", ds.root, "--generated", str(tmp_path / "empty")],
           ["--raw", ds.root, "--generated", str(tmp_path / "gen"), "--seeds", "0"]]
  fake_generated(ds, held_out, tmp_path / "gen")
  bad = tmp_path / "badgen"
  shutil.copytree(tmp_path / "gen", bad)
  (bad / "generated.jsonl").write_text('{"video": "clips/x.mp4", "condition": "odd"}\n')
  cases.append(["--raw", ds.root, "--generated", str(bad)])
  for extra in cases:
    out = tmp_path / "eval.json"
    assert evaluate.main(["--out", str(out), *extra]) == 2, extra
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not out.exists()
