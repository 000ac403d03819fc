"""k-NN accuracy against a float64 NumPy reference and scikit-learn's KNeighborsClassifier."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import neighbors

from bigbigan import sharding
from bigbigan.evaluation import knn
from bigbigan.evaluation.knn import knn_accuracy, knn_predictions, nearest_neighbor_accuracy


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
  got = knn_predictions(train, labels, test, mesh, ks=(1,), metric=metric, chunk_size=32)[1]
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


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_accuracy_on_points_with_known_neighbours(metric):
  # Training point i at angle 0.3 i on a circle (radius 1 for L2; any radius for cosine,
  # which sees only the angle), test point i at angle 0.3 i + 0.02: its neighbours in
  # order are training points i, i + 1, i - 1. So 1-NN predicts train_labels[i], and 3-NN
  # the majority of train_labels[i - 1 : i + 2] (of i's three nearest at the ends).
  train_labels = np.array([0, 1, 0, 1, 1, 2, 1, 2, 2, 0])
  one_nn = train_labels
  three_nn = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 2])  # Votes counted by hand.
  # Test labels: the 1-NN answer except at 2, 5 and 9 (7 of 10 right); the 3-NN answer
  # except at 1 and 6 (8 of 10 right).
  test_labels = np.array([0, 1, 1, 1, 1, 1, 1, 2, 2, 2])
  assert np.sum(one_nn == test_labels) == 7 and np.sum(three_nn == test_labels) == 8
  rng = np.random.default_rng(4)
  radii = lambda: rng.uniform(0.5, 3.0, (10, 1)) if metric == "cosine" else np.ones((10, 1))
  on_circle = lambda angles: np.stack([np.cos(angles), np.sin(angles)], axis=1)
  train = (on_circle(0.3 * np.arange(10)) * radii()).astype(np.float32)
  test = (on_circle(0.3 * np.arange(10) + 0.02) * radii()).astype(np.float32)
  # 10 training rows over 8 devices: most shards hold padding.
  accuracies = knn_accuracy(train, train_labels, test, test_labels, sharding.make_mesh(),
                            ks=(1, 3), metric=metric)
  assert accuracies == {1: 0.7, 3: 0.8}
  assert nearest_neighbor_accuracy(train, train_labels, test, test_labels,
                                   sharding.make_mesh(), metric) == 0.7


@pytest.mark.parametrize("metric", ["cosine", "l2"])
# 203 rows: 26 per device, more than k = 20; 61 rows: 8 per device, fewer than k, so some
# shard's local top-k holds all of its rows.
@pytest.mark.parametrize("train_size", [203, 61])
def test_knn_matches_sklearn_on_8_devices(metric, train_size):
  rng = np.random.default_rng(3)
  train = rng.standard_normal((train_size, 12)).astype(np.float32) * rng.uniform(
      0.5, 2, (train_size, 1)).astype(np.float32)
  # Labels that are not 0..C-1: votes must map back to the labels themselves.
  labels = rng.choice([2, 3, 5, 7, 11], train_size)
  test = rng.standard_normal((45, 12)).astype(np.float32)
  mesh = sharding.make_mesh()
  assert mesh.devices.size == 8 and train_size % 8
  got = knn_predictions(train, labels, test, mesh, ks=(1, 20), metric=metric, chunk_size=16)
  for k in (1, 20):
    reference = neighbors.KNeighborsClassifier(
        n_neighbors=k, metric="cosine" if metric == "cosine" else "euclidean",
        algorithm="brute").fit(train.astype(np.float64), labels)
    np.testing.assert_array_equal(got[k], reference.predict(test.astype(np.float64)),
                                  err_msg=f"k={k}")
  test_labels = rng.choice([2, 3, 5, 7, 11], len(test))
  accuracies = knn_accuracy(train, labels, test, test_labels, mesh, ks=(1, 20), metric=metric)
  assert accuracies == {k: float(np.mean(got[k] == test_labels)) for k in (1, 20)}


def test_votes_break_ties_towards_the_smallest_label():
  # Test point at the origin; training points on the unit circle at equal distance 1, with
  # labels 4, 4, 1, 1, 9: labels 4 and 1 tie at 2 votes each among the 4 nearest (the 9 is
  # farther), and 1 wins. 8 devices and 5 rows: most shards hold padding only.
  angles = np.array([0.0, 0.5, 1.0, 1.5])
  train = np.concatenate([np.stack([np.cos(angles), np.sin(angles)], axis=1), [[3.0, 0.0]]])
  labels = np.array([4, 4, 1, 1, 9])
  mesh = sharding.make_mesh()
  got = knn_predictions(train, labels, np.zeros((1, 2)), mesh, ks=(4, 5), metric="l2")
  assert got[4][0] == 1 and got[5][0] == 1
  reference = neighbors.KNeighborsClassifier(n_neighbors=4, algorithm="brute").fit(train, labels)
  assert reference.predict(np.zeros((1, 2)))[0] == 1


def test_no_device_gathers_the_scores_of_all_training_rows():
  """The top-k's first stage is local: the only scores crossing devices are the k best of
  each shard, never the [chunk, train] matrix (16 GB per device for ImageNet's 1.28M rows
  and a 1024-row chunk)."""
  mesh = sharding.make_mesh()
  train_rows, chunk, k = 8000, 64, 20
  rng = np.random.default_rng(2)
  predictions = knn_predictions(rng.standard_normal((train_rows, 4)),
                                rng.integers(0, 3, train_rows), rng.standard_normal((chunk, 4)),
                                mesh, ks=(k,), chunk_size=chunk)
  assert predictions[k].shape == (chunk,)
  # The same call, compiled: the size of every array a collective produces.
  on_devices = lambda shape, spec: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=spec)
  compiled = knn._knn_labels.lower(
      on_devices((train_rows, 4), sharding.batch_sharded(mesh)),
      on_devices((train_rows,), sharding.batch_sharded(mesh)),
      jax.ShapeDtypeStruct((train_rows,), jnp.int32, sharding=sharding.replicated(mesh)),
      on_devices((chunk, 4), sharding.replicated(mesh)), (k,), 3, mesh).compile()
  sizes = [int(np.prod([int(d) for d in dims.split(",")])) for dims in re.findall(
      r"= \w+\[([\d,]+)\][^ ]* (?:all-gather|all-reduce|all-to-all|collective-permute)\(",
      compiled.as_text())]
  assert sizes and max(sizes) <= chunk * mesh.devices.size * k
