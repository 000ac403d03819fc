"""The device mesh and the two layouts the trainer uses: batch sharded on `data`, state replicated.

Under `jax.jit` over this mesh, reductions over the batch (losses, BatchNorm statistics) are
over the *global* batch, so a step computes the same numbers on 1 device or on 512.
"""

import collections
import itertools
from typing import Any, Iterator, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh over `devices` (all devices of all processes by default)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  """The batch axis (the leading one by default) split over the `data` axis."""
  return NamedSharding(mesh, PartitionSpec(*(None,) * batch_axis, DATA_AXIS))


def to_global_batch(local_batch: np.ndarray, mesh: Mesh, batch_axis: int = 0) -> jax.Array:
  """Assembles each process's rows (along `batch_axis`) into one global array sharded on
  `data`."""
  return jax.make_array_from_process_local_data(batch_sharded(mesh, batch_axis), local_batch)


# Batches whose host-to-device transfer runs ahead of the step that uses them (the trainer's
# and the benchmark's).
DEVICE_PREFETCH = 2


def prefetch_to_mesh(local_batches: Iterator[Any], mesh: Mesh, batch_axis: int = 0,
                     size: int = DEVICE_PREFETCH) -> Iterator[Any]:
  """Yields `local_batches` (pytrees of this process's rows) as global `data`-sharded arrays,
  with the transfers of the next `size` batches already started.

  Transfers are asynchronous: while the step that uses one batch runs, the next ones are
  read from the host pipeline and copied to the devices, so a step does not wait for its
  input. `size=0` transfers each batch only when it is asked for.
  """
  local_batches = iter(local_batches)
  in_flight = collections.deque()

  def start_transfers(count: int) -> None:
    for rows in itertools.islice(local_batches, count):
      in_flight.append(jax.tree.map(lambda leaf: to_global_batch(leaf, mesh, batch_axis),
                                    rows))

  while True:
    start_transfers(size + 1 - len(in_flight))  # The batch to yield and `size` after it.
    if not in_flight:
      return
    yield in_flight.popleft()


def from_host_array(array: np.ndarray, mesh: Mesh) -> jax.Array:
  """A global array sharded on `data` from a host array that every process holds in full.

  Rows are zero-padded to a multiple of the device count; drop the outputs of rows
  `len(array):` (BatchNorm in inference mode keeps rows independent, so padding is inert).
  """
  padding = -len(array) % mesh.devices.size
  if padding:
    array = np.concatenate([array, np.zeros((padding,) + array.shape[1:], array.dtype)])
  return jax.make_array_from_callback(array.shape, batch_sharded(mesh),
                                      lambda index: array[index])


def gather_rows(array: jax.Array, rows: Optional[int] = None) -> np.ndarray:
  """A `data`-sharded global array as one host array on every process (a collective: all
  processes must call it); `rows` keeps the first rows only, e.g. to drop padding."""
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))[:rows]
