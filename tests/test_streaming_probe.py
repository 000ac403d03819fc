"""The streaming linear probe: accuracy, early stopping, streams = in-memory arrays, masks and
processes, top-5 and standardisation against NumPy references. 8 simulated devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigbigan import sharding
from bigbigan.data import mnist
from bigbigan.data import pipeline
from bigbigan.evaluation import streaming_probe
from bigbigan.evaluation.streaming_probe import (evaluate_probe, feature_batches,
                                                 feature_standardisation, in_memory_batches,
                                                 train_linear_probe, train_linear_probe_in_memory)
from mnist_mock import SPLIT_SIZES, ids_of

CLASSES = 4


def _clusters(n, seed, dim=6, spread=0.5):
  """Well-separated Gaussian clusters: linearly separable with a wide margin."""
  rng = np.random.default_rng(seed)
  centres = 4.0 * np.eye(CLASSES, dim)
  labels = rng.integers(0, CLASSES, n)
  features = centres[labels] + spread * rng.standard_normal((n, dim))
  return features.astype(np.float32), labels.astype(np.int32)


def _as_global_arrays(batches, mesh):
  """The same stream with its features as global jax.Arrays (labels and masks stay numpy)."""
  def stream():
    for batch in batches():
      yield {**batch, "features": sharding.to_global_batch(batch["features"], mesh)}
  return stream


def test_separable_features_reach_100_percent():
  mesh = sharding.make_mesh()
  # 150 and 70 rows: not multiples of the batch, so last batches are padded.
  result = train_linear_probe_in_memory(_clusters(150, 0), _clusters(40, 1), _clusters(70, 2),
                                        CLASSES, mesh, batch_size=32, epochs=4)
  assert result.validation_top1 == 1.0 and result.validation_top5 == 1.0
  assert result.train_examples == (150,) * 4 and len(result.train_val_top1) == 4
  assert result.train_val_top1[result.best_epoch] == 1.0
  assert result.params["weights"].shape == (6, CLASSES)


def test_uninformative_features_predict_the_most_frequent_class():
  # Features all equal standardise to 0: the probe is its bias alone, which SGD on the
  # cross-entropy raises fastest for the most frequent training class (3: 8 of 20). So
  # every example is predicted 3: top-1 is the share of 3s among the labels, exactly (4 of
  # 10 here; 1 of 10 is 0, the class that the untrained probe's tied logits would pick);
  # with 5 classes, every label is in the top 5.
  train_labels = np.array([3, 0, 3, 1, 3, 2, 3, 4, 3, 1, 3, 0, 3, 2, 4, 3, 1, 0, 2, 4])
  train_val_labels = np.array([3, 3, 1, 2, 4, 0, 3, 1])
  validation_labels = np.array([1, 3, 2, 3, 4, 3, 2, 1, 0, 3])
  constant = lambda labels: (np.full((len(labels), 3), 2.5, np.float32),
                             labels.astype(np.int32))
  result = train_linear_probe_in_memory(constant(train_labels), constant(train_val_labels),
                                        constant(validation_labels), 5, sharding.make_mesh(),
                                        batch_size=8, epochs=2)
  assert result.validation_top1 == 0.4 and result.validation_top5 == 1.0
  assert result.train_val_top1 == (3 / 8, 3 / 8)


def test_streaming_equals_in_memory_and_padding_batches_change_nothing():
  mesh = sharding.make_mesh()
  train, train_val, validation = _clusters(100, 3), _clusters(30, 4), _clusters(50, 5)
  options = dict(epochs=3, learning_rate=0.3, l2=1e-3)
  in_memory = train_linear_probe_in_memory(train, train_val, validation, CLASSES, mesh,
                                           batch_size=16, seed=7, **options)

  # The same batches, as global arrays and with a batch of padding only after each epoch's.
  twin = in_memory_batches(*train, 16, seed=7)

  def train_stream():
    yield from _as_global_arrays(twin, mesh)()
    yield {"features": np.zeros((16, 6), np.float32), "label": np.zeros(16, np.int32),
           "mask": np.zeros(16, bool)}

  streamed = train_linear_probe(
      train_stream, _as_global_arrays(in_memory_batches(*train_val, 16), mesh),
      _as_global_arrays(in_memory_batches(*validation, 16), mesh), CLASSES, mesh, **options)
  for name in ("weights", "bias", "feature_mean", "feature_scale"):
    np.testing.assert_array_equal(streamed.params[name], in_memory.params[name], err_msg=name)
  for field in ("best_epoch", "train_val_top1", "validation_top1", "validation_top5",
                "train_loss", "train_examples"):
    assert getattr(streamed, field) == getattr(in_memory, field), field


def _relabelled_after(epochs, features, labels):
  """A training stream whose labels are true for `epochs` passes, then shifted by one class:
  the probe first learns the task, then unlearns it, so train_val accuracy peaks and drops."""
  passes = iter(range(1_000_000))
  true_batches, shifted_batches = (in_memory_batches(features, y, 32, seed=0)
                                   for y in (labels, (labels + 1) % CLASSES))

  def stream():
    return (true_batches if next(passes) < epochs else shifted_batches)()
  return stream


@pytest.mark.parametrize("patience", [2, None])
def test_early_stopping_keeps_the_best_train_val_epoch(patience):
  mesh = sharding.make_mesh()
  train_val = in_memory_batches(*_clusters(64, 7), 32)
  result = train_linear_probe(_relabelled_after(2, *_clusters(192, 6)), train_val,
                              in_memory_batches(*_clusters(64, 8), 32), CLASSES, mesh,
                              epochs=7, learning_rate=0.5, patience=patience,
                              standardise=False)
  history = result.train_val_top1
  # The clusters are separable with a wide margin: after the two true passes every train_val
  # example is right; once the probe has learned the shifted labels, every one is wrong
  # (it predicts y + 1). The first of the best epochs is kept, and patience 2 stops two
  # epochs after it.
  assert history == (1.0, 1.0) + (0.0,) * (len(history) - 2)
  assert result.best_epoch == 0
  assert len(history) == (7 if patience is None else 3)
  # The params returned are the best epoch's, not the last's: they reproduce its accuracy.
  assert evaluate_probe(result.params, train_val, mesh)["top1"] == 1.0
  assert result.validation_top1 == 1.0


def test_two_processes_feed_every_example_once_per_epoch(mock_mnist):
  """eval_batches of 2 processes, assembled as `to_global_batch` would across them (process
  0's rows first), through feature_batches and the probe: every example counts once."""
  mesh = sharding.make_mesh()

  def global_batches(split):
    per_process = [list(pipeline.eval_batches("mnist", split, 8, mnist.mnist_preprocess(),
                                              mock_mnist, process_index=p, process_count=2))
                   for p in range(2)]
    assert len(per_process[0]) == len(per_process[1])
    return [{key: np.concatenate([first[key], second[key]]) for key in first}
            for first, second in zip(*per_process)]

  train, test = global_batches("train"), global_batches("test")
  train_images = np.concatenate([b["image"][b["mask"]] for b in train])
  assert sorted(ids_of(train_images)) == list(range(SPLIT_SIZES["train"]))
  to_features = jax.jit(lambda images: images.astype(jnp.float32))
  result = train_linear_probe(*(feature_batches(lambda batches=batches: iter(batches),
                                                to_features, mesh)
                                for batches in (train, train, test)),
                              num_classes=10, mesh=mesh, epochs=2)
  assert result.train_examples == (SPLIT_SIZES["train"],) * 2
  # Padding rows or a second copy of a row would move the mean.
  np.testing.assert_allclose(result.params["feature_mean"],
                             train_images.astype(np.float64).mean(axis=0), rtol=1e-5)
  test_images = np.concatenate([b["image"][b["mask"]] for b in test]).astype(np.float64)
  test_labels = np.concatenate([b["label"][b["mask"]] for b in test])
  p = result.params
  logits = (test_images - p["feature_mean"]) / p["feature_scale"] @ p["weights"] + p["bias"]
  assert result.validation_top1 == pytest.approx(
      np.mean(np.argmax(logits, axis=1) == test_labels), abs=1e-9)


def test_in_memory_batches_split_every_example_once_over_processes():
  features = np.arange(37, dtype=np.float32)[:, None]  # Each row holds its own index.
  labels = np.arange(37) % 3
  streams = [in_memory_batches(features, labels, 8, seed=5, process_index=p, process_count=2)
             for p in range(2)]
  single = in_memory_batches(features, labels, 8, seed=5, process_index=0, process_count=1)
  orders = []
  for _ in range(2):  # Two epochs: two different orders, each covering every row once.
    per_process = [list(stream()) for stream in streams]
    assert len(per_process[0]) == len(per_process[1]) == 5
    seen = np.concatenate([b["features"][b["mask"], 0] for batches in per_process
                           for b in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(37))
    # The global batch (process 0's rows, then process 1's) is the 1-process batch.
    for first, second, whole in zip(*per_process, single()):
      for key in whole:
        np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), whole[key])
    orders.append(np.concatenate([b["features"][:, 0] for b in per_process[0]]))
  assert not np.array_equal(*orders)


def test_top5_and_top1_match_numpy_on_known_logits():
  rng = np.random.default_rng(9)
  # Logits rounded to one decimal: many ties, which rank by class index.
  logits = np.round(rng.standard_normal((45, 10)), 1).astype(np.float32)
  labels = rng.integers(0, 10, 45)
  # The probe is the identity: its logits are the features.
  params = {"weights": np.eye(10, dtype=np.float32), "bias": np.zeros(10, np.float32),
            "feature_mean": np.zeros(10, np.float32), "feature_scale": np.ones(10, np.float32)}
  got = evaluate_probe(params, in_memory_batches(logits, labels, 16), sharding.make_mesh())
  order = np.argsort(-logits, axis=1, kind="stable")  # Equal logits: the lower class first.
  assert got["examples"] == 45
  assert got["top1"] == pytest.approx(np.mean(order[:, 0] == labels), abs=1e-12)
  assert got["top5"] == pytest.approx(np.mean(np.any(order[:, :5] == labels[:, None], axis=1)),
                                      abs=1e-12)
  assert got["top1"] < got["top5"] < 1.0


def test_standardisation_matches_numpy_on_offset_features():
  rng = np.random.default_rng(10)
  # A large mean beside a small spread: summing x^2 in float32 would lose the variance.
  features = (100.0 + 0.1 * rng.standard_normal((203, 5)) * np.arange(1, 6)).astype(np.float32)
  features[:, 4] = 3.0  # A constant feature: scale MIN_FEATURE_SCALE, not 0.
  got = feature_standardisation(in_memory_batches(features, np.zeros(203, np.int32), 24),
                                sharding.make_mesh())
  reference = features.astype(np.float64)
  np.testing.assert_allclose(got["feature_mean"], reference.mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(got["feature_scale"][:4], reference.std(axis=0)[:4], rtol=1e-4)
  assert got["feature_scale"][4] == np.float32(streaming_probe.MIN_FEATURE_SCALE)
