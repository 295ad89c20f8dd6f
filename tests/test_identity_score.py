"""The demo's appearance score separates actors on ground truth and is blind without identity."""
import numpy as np

from wildactor_jax.demo import identity_score as ids


def render(colors, size=16, bg=(230, 230, 230)):
  im = np.full((size, size, 3), bg, np.uint8)
  for i, c in enumerate(colors):
    im[4 + 3 * i: 7 + 3 * i, 5:11] = c
  return im


def test_ground_truth_scores_its_own_actor_and_grey_scores_none():
  actors = {"a": [(200, 30, 30), (20, 20, 200)], "b": [(30, 200, 30), (240, 200, 0)],
            "c": [(120, 0, 120), (0, 120, 120)]}
  distinct = ids.distinctive({k: ids.palette([render(v)]) for k, v in actors.items()})
  for name, colors in actors.items():
    clip = np.stack([render(colors, bg=(90, 60, 30))] * 3)  # a different background
    m = ids.identity_margin(clip, name, distinct)
    assert m["top1"] and m["margin"] > 0.1  # bounded by the figure's share of the frame
  grey = np.full((3, 16, 16, 3), 128, np.uint8)
  assert abs(ids.identity_margin(grey, "a", distinct)["margin"]) < 1e-9
