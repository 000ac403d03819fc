"""The device mesh and the layouts the trainer uses: the batch sharded on `data`, and the
training state in ZeRO stage-1 style (`state_shardings`): Adam's moments and the EMA split
over `data`, the rest replicated.

Under `jax.jit` over this mesh, reductions over the batch (losses, BatchNorm statistics) are
over the *global* batch, so a step computes the same numbers on 1 device or on 512.
"""

import collections
import functools
import itertools
from typing import Any, Callable, Iterator, Optional, Sequence

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


# Leaves under this many elements stay replicated: splitting a bias or a BatchNorm scale saves
# a few bytes for a collective of its own.
MIN_SPLIT_ELEMENTS = 2**14
# The state's fields that each device keeps a 1/N slice of: they are read and written only
# elementwise by the update (Adam's moments, the EMA), so a device updates its own slice
# from the (all-reduced) gradient and the params, and nothing gathers them in the step.
SPLIT_FIELDS = ("opt_state", "ema")


def split_axis(shape: Sequence[int], devices: int) -> Optional[int]:
  """The axis along which a leaf of `shape` splits over `devices`: its largest axis that
  `devices` divides (the first of equals); None (replicated) if none does, or if the leaf
  is small (MIN_SPLIT_ELEMENTS), or for one device."""
  axes = [axis for axis, size in enumerate(shape) if size % devices == 0]
  if devices == 1 or not axes or np.prod(shape, dtype=np.int64) < MIN_SPLIT_ELEMENTS:
    return None
  return max(axes, key=lambda axis: shape[axis])


def split_over_devices(shape: Sequence[int], mesh: Mesh) -> NamedSharding:
  """A leaf of `shape` split over `data` along `split_axis`, or replicated."""
  axis = split_axis(shape, mesh.shape[DATA_AXIS])
  if axis is None:
    return replicated(mesh)
  return NamedSharding(mesh, PartitionSpec(*(None,) * axis, DATA_AXIS))


def is_split_field(path) -> bool:
  """Whether the state's leaf at `path` (a pytree key path) is in one of SPLIT_FIELDS."""
  return any(isinstance(key, jax.tree_util.GetAttrKey) and key.name in SPLIT_FIELDS
             for key in path)


def state_shardings(state: Any, mesh: Mesh) -> Any:
  """The training state's layout on `mesh` (a pytree of NamedSharding like `state`, whose
  leaves may be arrays, tracers or jax.ShapeDtypeStruct): ZeRO stage 1. Every SPLIT_FIELDS
  leaf is split over the devices (`split_over_devices`); params, BatchNorm and
  spectral-norm state, the standing statistics, step and rng are replicated.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: (split_over_devices(leaf.shape, mesh) if is_split_field(path)
                          else replicated(mesh)), state)


def abstract_state(shapes: Any, mesh: Mesh) -> Any:
  """`shapes` (jax.eval_shape of a state initializer) as jax.ShapeDtypeStructs in the
  state's layout on `mesh`: what compiling from shapes, and restoring, place it by."""
  return jax.tree.map(lambda leaf, place: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                               sharding=place),
                      shapes, state_shardings(shapes, mesh))


def jit_update(train_step: Callable, batch_sharding: NamedSharding, mesh: Mesh) -> Callable:
  """`train_step(state, batch) -> (state, metrics)` jitted over `mesh`, the state donated and
  kept in `state_shardings`: the step constrains it at its start (a replicated argument is
  sliced where it lies, with no data moved) and at its end (the layout the next call, and
  the donation, expect); the metrics replicated."""
  def in_layout(state):
    return jax.lax.with_sharding_constraint(state, state_shardings(state, mesh))

  @functools.wraps(train_step)  # The program keeps its name: jit_train_step.
  def step(state, batch):
    state, metrics = train_step(in_layout(state), batch)
    return in_layout(state), metrics

  return jax.jit(step, in_shardings=(None, batch_sharding),
                 out_shardings=(None, replicated(mesh)), donate_argnums=0)


def gathered(tree: Any, mesh: Mesh) -> Any:
  """`tree` (e.g. the EMA params) whole on every device, inside a jitted program: a forward
  then computes on whole weights whatever layout the state keeps them in (an exported
  bundle's replicated weights or the training state's split EMA), with no collective
  inside its layers."""
  return jax.lax.with_sharding_constraint(tree, replicated(mesh))


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
