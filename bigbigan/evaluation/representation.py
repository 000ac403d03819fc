"""How good the encoder's features are: 1-NN and linear-probe accuracy, the BiGAN paper's
MNIST measures, on E(x) (the latent mean) and on E's penultimate layer, with raw pixels as
the reference.

Features of the labelled split (e.g. train) and of the evaluation split (e.g. test) are
computed with the deterministic, padded and masked evaluation iterator, so every example
counts exactly once whatever the number of processes.
"""

from typing import Callable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from bigbigan import sharding
from bigbigan.evaluation.knn import nearest_neighbor_accuracy
from bigbigan.evaluation.linear_probe import linear_probe_accuracy

def _gather(array: jax.Array) -> np.ndarray:
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def compute_features(feature_fn: Callable[[jax.Array], dict[str, jax.Array]],
                     batches: Iterator[dict[str, np.ndarray]],
                     mesh: Mesh) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Runs `feature_fn` over masked evaluation batches; returns (features by name, labels).

  Args:
    feature_fn: global image batch -> {name: [B, D] features}, jitted over `mesh`.
    batches: this process's rows: {"image", "label", "mask"} per batch.
    mesh: the device mesh.
  """
  features: dict[str, list[np.ndarray]] = {}
  labels = []
  for batch in batches:
    mask = _gather(sharding.to_global_batch(batch["mask"], mesh))
    labels.append(_gather(sharding.to_global_batch(batch["label"], mesh))[mask])
    outputs = feature_fn(sharding.to_global_batch(batch["image"], mesh))
    for name, value in outputs.items():
      features.setdefault(name, []).append(_gather(value)[mask])
  return {name: np.concatenate(parts) for name, parts in features.items()}, np.concatenate(
      labels)


def representation_metrics(train: tuple[dict[str, np.ndarray], np.ndarray],
                           test: tuple[dict[str, np.ndarray], np.ndarray], mesh: Mesh,
                           probe: bool = True) -> dict[str, float]:
  """1-NN (L2 and cosine) and, optionally, linear-probe accuracy for every feature.

  Metric names: `knn_1_accuracy[_cosine]_<feature>` and `linear_accuracy_<feature>`.
  """
  (train_features, train_labels), (test_features, test_labels) = train, test
  metrics = {}
  for name, features in train_features.items():
    for metric in ("l2", "cosine"):
      suffix = "" if metric == "l2" else "_cosine"
      metrics[f"knn_1_accuracy{suffix}_{name}"] = nearest_neighbor_accuracy(
          features, train_labels, test_features[name], test_labels, mesh, metric)
    if probe:
      metrics[f"linear_accuracy_{name}"] = linear_probe_accuracy(
          features, train_labels, test_features[name], test_labels, mesh)
  return metrics

