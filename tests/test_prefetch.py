"""Device prefetch (sharding.prefetch_to_mesh): order, layout, and how far it reads ahead."""

import jax
import numpy as np
import pytest

from bigbigan import sharding


class _CountingIterator:
  """Host batches 0, 1, ...; remembers how many were taken."""

  def __init__(self, count: int):
    self.taken, self._count = 0, count

  def __iter__(self):
    return self

  def __next__(self):
    if self.taken == self._count:
      raise StopIteration
    self.taken += 1
    rows = np.arange(2 * 16, dtype=np.float32).reshape(2, 16) + 100 * (self.taken - 1)
    return {"x": rows, "labels": np.full((2, 16), self.taken - 1, np.int32)}


@pytest.mark.parametrize("size", [0, 1, 2, 5])
def test_yields_every_batch_in_order_sharded_and_reads_size_ahead(size):
  mesh = sharding.make_mesh()
  source = _CountingIterator(4)
  batches = sharding.prefetch_to_mesh(source, mesh, batch_axis=1, size=size)
  taken_when_yielded = []
  for i, batch in enumerate(batches):
    taken_when_yielded.append(source.taken)
    assert batch["x"].sharding == sharding.batch_sharded(mesh, 1)
    assert batch["labels"].sharding == sharding.batch_sharded(mesh, 1)
    np.testing.assert_array_equal(
        jax.device_get(batch["x"]), np.arange(32, dtype=np.float32).reshape(2, 16) + 100 * i)
    np.testing.assert_array_equal(jax.device_get(batch["labels"]), np.full((2, 16), i))
  # Batch i is handed out once batches up to i + size have been read (and their transfers
  # started), never more: the source is consumed lazily.
  assert taken_when_yielded == [min(i + size + 1, 4) for i in range(4)]
