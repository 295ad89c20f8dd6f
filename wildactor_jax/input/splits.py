"""The identity-disjoint split of a dataset: which actors are held out for testing.

One rule, used by the dataset builder (data/actor18m: the TFDS train/test splits) and by the
evaluation (wildactor_jax/eval: which identities are unseen), so the two always agree. It lives
in the package because the installed package must not import the repository's data/ folder.
"""
from __future__ import annotations

import hashlib
from typing import Iterable

SPLITS = ("train", "test")


def actor_hash(actor_id: str) -> float:
  """A stable number in [0, 1) per identity (sha256, not Python's salted hash)."""
  return int(hashlib.sha256(actor_id.encode()).hexdigest()[:12], 16) / 16 ** 12


def held_out_actors(actor_ids: Iterable[str], test_fraction: float) -> set[str]:
  """The identities of the test split: those whose hash is below test_fraction; if that leaves
  none while there are >= 2 identities and the fraction is positive, the one with the smallest
  hash (so tiny datasets still get a test set)."""
  actors = sorted(set(actor_ids), key=actor_hash)
  test = {a for a in actors if actor_hash(a) < test_fraction}
  if not test and len(actors) >= 2 and test_fraction > 0:
    test = {actors[0]}
  return test
