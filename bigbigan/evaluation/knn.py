"""Exact k-nearest-neighbour classification accuracy, in JAX, sharded over the mesh.

The BiGAN paper's MNIST measure is the 1-NN: each test example takes the label of its
nearest training example (L2 or cosine distance) in some feature space. For k > 1 the k
nearest training examples vote, one vote each; among labels with equal votes the smallest
wins. That is scikit-learn's `KNeighborsClassifier(n_neighbors=k, algorithm="brute")` with
uniform weights (its vote, `scipy.stats.mode` or the arg-max of `predict_proba`, also takes
the smallest of the most frequent labels), so the two can be compared exactly.

The training set is sharded over the `data` axis and test examples go in replicated chunks,
so the memory per device is O(train / devices + chunk x train / devices). The top-k is in two
stages: each device keeps the k best of its own shard (under `jax.shard_map`, with no
communication), then the k best of those devices x k candidates are the global k nearest:
exact, since each of the global k nearest is among the k nearest of its own shard. Ties
between equally near training examples go to the lower training index, in both stages, as
`np.argmin` would choose.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bigbigan import sharding

METRICS = ("l2", "cosine")


def _normalise(features: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(features.astype(np.float64), axis=1, keepdims=True)
  return (features / np.maximum(norms, 1e-12)).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("ks", "num_classes", "mesh"))
def _knn_labels(train: jax.Array, train_offsets: jax.Array, train_labels: jax.Array,
                test: jax.Array, ks: tuple[int, ...], num_classes: int, mesh: Mesh) -> jax.Array:
  """[len(ks), chunk] predicted class indices of a replicated test chunk, one row per k."""
  k_max = max(ks)
  shard_size = train.shape[0] // mesh.shape[sharding.DATA_AXIS]
  local_k = min(k_max, shard_size)

  def local_top_k(train_shard, offsets_shard, test):
    # A larger score is nearer: for L2, -||a - b||^2 / 2 = a.b - ||b||^2 / 2 - ||a||^2 / 2,
    # and ||a||^2 is constant per test row, so it is left out (`offsets` = ||b||^2 / 2); for
    # cosine the features are unit vectors and the offsets 0. Padding rows have an infinite
    # offset, so they are never anyone's neighbour.
    scores = jnp.dot(test, train_shard.T,
                     precision=jax.lax.Precision.HIGHEST) - offsets_shard[None, :]
    values, index = jax.lax.top_k(scores, local_k)
    index = index + shard_size * jax.lax.axis_index(sharding.DATA_AXIS)
    return values[:, None, :], index[:, None, :]

  # Under shard_map, not plain jit: XLA's partitioner gathers a sharded operand of top_k in
  # full first, which for ImageNet would be every test row's score against all of train.
  rows, replicated = PartitionSpec(sharding.DATA_AXIS), PartitionSpec()
  per_shard = PartitionSpec(None, sharding.DATA_AXIS, None)
  values, index = jax.shard_map(local_top_k, mesh=mesh, in_specs=(rows, rows, replicated),
                                out_specs=(per_shard, per_shard))(train, train_offsets, test)
  # [chunk, shards x local_k] candidates in shard order, each shard's in rank order: on equal
  # scores the second top-k prefers the lower shard, and within one the lower index.
  chunk = test.shape[0]
  _, best = jax.lax.top_k(values.reshape(chunk, -1), k_max)
  neighbour_labels = train_labels[jnp.take_along_axis(index.reshape(chunk, -1), best, axis=1)]
  predictions = []
  for k in ks:
    if k == 1:
      predictions.append(neighbour_labels[:, 0])  # No vote to count.
      continue
    votes = jnp.sum(jax.nn.one_hot(neighbour_labels[:, :k], num_classes, dtype=jnp.int32),
                    axis=1)
    predictions.append(jnp.argmax(votes, axis=1))  # The first maximum: the smallest label.
  # Replicated, so every process can read all predictions.
  return jax.lax.with_sharding_constraint(jnp.stack(predictions),
                                          NamedSharding(mesh, PartitionSpec()))


def knn_predictions(train_features: np.ndarray, train_labels: np.ndarray,
                    test_features: np.ndarray, mesh: Mesh, ks: Sequence[int] = (1, 20),
                    metric: str = "l2", chunk_size: int = 1024) -> dict[int, np.ndarray]:
  """Each test example's label by a vote of its k nearest training examples, for each k.

  The neighbours are found once, for the largest k; a smaller k takes the nearest of them.

  Args:
    train_features: [N, D] features of the labelled set (every process holds all of them).
    train_labels: [N] integer labels.
    test_features: [M, D] features to classify.
    mesh: the device mesh; the training set is sharded over its `data` axis.
    ks: the neighbourhood sizes, each in [1, N].
    metric: "l2" (Euclidean) or "cosine" (cosine similarity, the nearest the most similar).
    chunk_size: test examples per device call.

  Returns:
    {k: [M] predicted labels}: the most frequent label among the k nearest, the smallest
    of equally frequent ones; equally near training examples rank by index.
  """
  if metric not in METRICS:
    raise ValueError(f"metric={metric!r}: allowed {METRICS}")
  ks = tuple(sorted(set(int(k) for k in ks)))
  train = np.asarray(train_features, np.float32)
  if not ks or ks[0] < 1 or ks[-1] > len(train):
    raise ValueError(f"ks={ks}: each must be in [1, {len(train)}] (the training set's size)")
  # Votes count class indices into the sorted distinct labels (scikit-learn's `classes_`), so
  # the smallest index is the smallest label and labels may be any integers.
  classes, class_indices = np.unique(np.asarray(train_labels), return_inverse=True)
  if len(class_indices) != len(train):
    raise ValueError(f"{len(train)} training rows but {len(class_indices)} labels")
  test = np.asarray(test_features, np.float32)
  if metric == "cosine":
    train, test = _normalise(train), _normalise(test)
    offsets = np.zeros(len(train), np.float32)
  else:
    offsets = (0.5 * np.sum(train.astype(np.float64) ** 2, axis=1)).astype(np.float32)
  padding = -len(train) % mesh.devices.size
  offsets = np.concatenate([offsets, np.full(padding, np.inf, np.float32)])
  train_on_devices = sharding.from_host_array(train, mesh)
  offsets_on_devices = jax.make_array_from_callback(
      offsets.shape, sharding.batch_sharded(mesh), lambda index: offsets[index])
  replicated = sharding.replicated(mesh)
  # Replicated labels (4 bytes a row) let the k winners' labels be read without a gather
  # across devices.
  labels_on_devices = jax.device_put(class_indices.astype(np.int32), replicated)
  predictions = []
  # Every chunk has chunk_size rows (the last one zero-padded), so one compilation serves all.
  chunk_size = min(chunk_size, len(test))
  padded = np.concatenate([test, np.zeros((-len(test) % chunk_size, test.shape[1]),
                                          np.float32)])
  for start in range(0, len(padded), chunk_size):
    chunk = jax.device_put(padded[start:start + chunk_size], replicated)
    predictions.append(np.asarray(_knn_labels(
        train_on_devices, offsets_on_devices, labels_on_devices, chunk, ks, len(classes),
        mesh)))
  by_k = classes[np.concatenate(predictions, axis=1)[:, :len(test)]]
  return {k: by_k[i] for i, k in enumerate(ks)}


def knn_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                 test_features: np.ndarray, test_labels: np.ndarray, mesh: Mesh,
                 ks: Sequence[int] = (1, 20), metric: str = "l2",
                 chunk_size: int = 1024) -> dict[int, float]:
  """Fraction of test examples that the vote of their k nearest training examples labels
  correctly, for each k in `ks` (see `knn_predictions`).

  Returns:
    {k: accuracy}.
  """
  predictions = knn_predictions(train_features, train_labels, test_features, mesh, ks,
                                metric, chunk_size)
  test_labels = np.asarray(test_labels)
  return {k: float(np.mean(predicted == test_labels)) for k, predicted in predictions.items()}


def nearest_neighbor_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                              test_features: np.ndarray, test_labels: np.ndarray, mesh: Mesh,
                              metric: str = "l2") -> float:
  """Fraction of test examples whose nearest training example has their label."""
  return knn_accuracy(train_features, train_labels, test_features, test_labels, mesh, (1,),
                      metric)[1]
