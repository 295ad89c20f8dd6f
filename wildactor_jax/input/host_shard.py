"""Each process's share of one global example stream, so that a run's batches do not depend on
how many processes read them.

Every process builds the same global stream (same shuffle, same per-example random draws) and
reads only its own positions: process p of P takes positions [p b, (p + 1) b) of each run of
global_batch_size (b = global_batch_size / P). The per-process batches, stacked in process
order as `batches.to_global` does, are then the global batches one process would make, so a
multi-host run trains on exactly the data of a one-host run (tests/test_multihost.py). Grain
map datasets are lazy: a process reads and decodes its own positions only.
"""
from __future__ import annotations

import grain


class _GlobalPosition:
  """Local position k -> the element at its global position (None: filtered by Grain)."""

  def __init__(self, stream: grain.MapDataset, global_batch: int, per_process: int, first: int):
    self.stream, self.global_batch, self.per_process, self.first = (
        stream, global_batch, per_process, first)

  def __call__(self, k: int):
    k = int(k)
    g = (k // self.per_process) * self.global_batch + self.first + k % self.per_process
    return self.stream[g]


def process_share(stream: grain.MapDataset, global_batch: int, process_index: int,
                  process_count: int) -> grain.MapDataset:
  """Process `process_index`'s positions of `stream`, in order (see the module docstring). A
  finite stream's last, incomplete global batch is shared out the same way (a process may get
  fewer elements there; batching with drop_remainder keeps whole batches only)."""
  if global_batch % process_count:
    raise ValueError(f"config.data.global_batch_size {global_batch}: expected a multiple of the "
                     f"process count {process_count}")
  b = global_batch // process_count
  first = process_index * b
  full, rest = divmod(len(stream), global_batch)
  count = full * b + min(max(rest - first, 0), b)
  return grain.MapDataset.range(count).map(_GlobalPosition(stream, global_batch, b, first))
