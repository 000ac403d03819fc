"""1-NN accuracy against a float64 NumPy reference."""

import jax
import numpy as np
import pytest

from bigbigan import sharding
from bigbigan.evaluation.knn import nearest_neighbor_accuracy, nearest_neighbor_predictions


def _reference(train, train_labels, test, metric):
  train, test = train.astype(np.float64), test.astype(np.float64)
  if metric == "cosine":
    similarity = (test / np.linalg.norm(test, axis=1, keepdims=True)) @ (
        train / np.linalg.norm(train, axis=1, keepdims=True)).T
    return train_labels[np.argmax(similarity, axis=1)]
  distances = np.sum((test[:, None, :] - train[None, :, :]) ** 2, axis=-1)
  return train_labels[np.argmin(distances, axis=1)]


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("num_devices", [1, 8])
def test_matches_float64_reference(metric, num_devices):
  rng = np.random.default_rng(0)
  # 203 training rows: not a multiple of 8, so the padding path runs.
  train = rng.standard_normal((203, 16)).astype(np.float32) * rng.uniform(0.5, 2, (203, 1))
  labels = rng.integers(0, 10, 203)
  test = rng.standard_normal((77, 16)).astype(np.float32)
  mesh = sharding.make_mesh(jax.devices()[:num_devices])
  got = nearest_neighbor_predictions(train, labels, test, mesh, metric, chunk_size=32)
  np.testing.assert_array_equal(got, _reference(train, labels, test, metric))


def test_accuracy_of_exact_copies_is_one_and_metrics_differ():
  rng = np.random.default_rng(1)
  train = rng.standard_normal((64, 8)).astype(np.float32)
  labels = np.arange(64) % 5
  mesh = sharding.make_mesh()
  assert nearest_neighbor_accuracy(train, labels, train, labels, mesh) == 1.0
  # Scaled copies: cosine ignores the scale, L2 does not.
  scaled = train * 3.0
  assert nearest_neighbor_accuracy(train, labels, scaled, labels, mesh, "cosine") == 1.0
  assert nearest_neighbor_accuracy(train, labels, scaled, labels, mesh, "l2") < 1.0
