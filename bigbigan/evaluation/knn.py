"""Exact 1-nearest-neighbour classification accuracy, in JAX, sharded over the mesh.

The BiGAN paper's MNIST measure: each test example takes the label of its nearest training
example (L2 or cosine distance) in some feature space. The training set is sharded over the
`data` axis and test examples go in replicated chunks, so the memory per device is
O(train / devices + chunk x train / devices) and the arg-min over all training examples is
one cross-device reduction that XLA inserts.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from bigbigan import sharding

METRICS = ("l2", "cosine")


def _normalise(features: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(features, axis=1, keepdims=True)
  return features / np.maximum(norms, 1e-12)


@functools.partial(jax.jit, static_argnames=("out_sharding",))
def _nearest_labels(train: jax.Array, train_sq_norms: jax.Array, train_labels: jax.Array,
                    test: jax.Array, out_sharding) -> jax.Array:
  # ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2; ||a||^2 is constant per test row, so it does not
  # change the arg-min and is left out.
  scores = train_sq_norms[None, :] - 2.0 * jnp.dot(test, train.T,
                                                   precision=jax.lax.Precision.HIGHEST)
  labels = train_labels[jnp.argmin(scores, axis=1)]
  # Replicated, so every process can read all predictions.
  return jax.lax.with_sharding_constraint(labels, out_sharding)


def nearest_neighbor_predictions(train_features: np.ndarray, train_labels: np.ndarray,
                                 test_features: np.ndarray, mesh: Mesh, metric: str = "l2",
                                 chunk_size: int = 1024) -> np.ndarray:
  """The label of each test example's nearest training example.

  Args:
    train_features: [N, D] features of the labelled set.
    train_labels: [N] integer labels.
    test_features: [M, D] features to classify.
    mesh: the device mesh; the training set is sharded over its `data` axis.
    metric: "l2" (Euclidean) or "cosine" (Euclidean on unit-normalised features, which
      ranks neighbours exactly as cosine similarity does).
    chunk_size: test examples per device call.

  Returns:
    [M] predicted labels (ties go to the lowest training index, as np.argmin does).
  """
  if metric not in METRICS:
    raise ValueError(f"metric={metric!r}: allowed {METRICS}")
  train = np.asarray(train_features, np.float32)
  test = np.asarray(test_features, np.float32)
  if metric == "cosine":
    train, test = _normalise(train), _normalise(test)
  sq_norms = np.sum(train.astype(np.float64) ** 2, axis=1).astype(np.float32)
  # Padding rows get an infinite norm, so they are never anyone's nearest neighbour.
  padding = -len(train) % mesh.devices.size
  sq_norms = np.concatenate([sq_norms, np.full(padding, np.inf, np.float32)])
  train_on_devices = sharding.from_host_array(train, mesh)
  norms_on_devices = jax.make_array_from_callback(
      sq_norms.shape, sharding.batch_sharded(mesh), lambda index: sq_norms[index])
  labels_on_devices = sharding.from_host_array(np.asarray(train_labels, np.int32), mesh)
  replicated = sharding.replicated(mesh)
  predictions = []
  # Every chunk has chunk_size rows (the last one zero-padded), so one compilation serves all.
  chunk_size = min(chunk_size, len(test))
  padded = np.concatenate([test, np.zeros((-len(test) % chunk_size, test.shape[1]),
                                          np.float32)])
  for start in range(0, len(padded), chunk_size):
    chunk = jax.device_put(padded[start:start + chunk_size], replicated)
    predictions.append(np.asarray(_nearest_labels(
        train_on_devices, norms_on_devices, labels_on_devices, chunk, replicated)))
  return np.concatenate(predictions)[:len(test)]


def nearest_neighbor_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                              test_features: np.ndarray, test_labels: np.ndarray, mesh: Mesh,
                              metric: str = "l2") -> float:
  """Fraction of test examples whose nearest training example has their label."""
  predictions = nearest_neighbor_predictions(train_features, train_labels, test_features,
                                             mesh, metric)
  return float(np.mean(predictions == np.asarray(test_labels)))
