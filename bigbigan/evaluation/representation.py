"""How good the encoder's features are: 1-NN and linear-probe accuracy, the BiGAN paper's
MNIST measures, on E(x) (the latent mean) and on E's penultimate layer, with raw pixels as
the reference.

Features of the labelled split (e.g. train) and of the evaluation split (e.g. test) are
computed with the deterministic, padded and masked evaluation iterator, so every example
counts exactly once whatever the number of processes.
"""

from typing import Callable, Iterator, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from bigbigan import progress
from bigbigan import sharding
from bigbigan.evaluation.knn import nearest_neighbor_accuracy
from bigbigan.evaluation.linear_probe import linear_probe_accuracy

def compute_features(feature_fn: Callable[[jax.Array], dict[str, jax.Array]],
                     batches: Iterator[dict[str, np.ndarray]], mesh: Mesh,
                     what: str = "features", total: Optional[int] = None
                     ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Runs `feature_fn` over masked evaluation batches; returns (features by name, labels).

  Args:
    feature_fn: global image batch -> {name: [B, D] features}, jitted over `mesh`.
    batches: this process's rows: {"image", "label", "mask"} per batch.
    mesh: the device mesh.
    what: the work's name in the progress lines of the log.
    total: the examples the batches hold (all processes), for the time left; None if unknown.
  """
  features: dict[str, list[np.ndarray]] = {}
  masks, labels = [], []
  # Every process holds an even share of each batch, so its rows stand for all processes'.
  examples = lambda batch: int(np.sum(batch["mask"])) * jax.process_count()
  for batch in progress.track(batches, what, total, examples):
    masks.append(batch["mask"])
    labels.append(batch["label"])
    outputs = feature_fn(sharding.to_global_batch(batch["image"], mesh))
    for name, value in outputs.items():
      features.setdefault(name, []).append(sharding.gather_rows(value))
  mask, label = _gather_batches(np.stack(masks)), _gather_batches(np.stack(labels))
  return ({name: np.concatenate(parts)[mask] for name, parts in features.items()},
          label[mask])


def _gather_batches(local: np.ndarray) -> np.ndarray:
  """[batches, local rows] host arrays of every process -> global rows, batch by batch.

  One collective for all batches. A global batch's rows are its processes' rows in process
  order (the device order of the mesh), which is how `sharding.gather_rows` concatenates
  device outputs.
  """
  every = np.asarray(multihost_utils.process_allgather(local))  # [processes, batches, rows]
  return every.transpose(1, 0, 2).reshape(-1)


def representation_metrics(train: tuple[dict[str, np.ndarray], np.ndarray],
                           test: tuple[dict[str, np.ndarray], np.ndarray], mesh: Mesh,
                           knn_metrics: tuple[str, ...] = ("l2", "cosine"),
                           probe: bool = True) -> dict[str, float]:
  """1-NN accuracy per distance in `knn_metrics`, and optionally the linear probe's, for
  every feature.

  Metric names: `knn_1_accuracy[_cosine]_<feature>` and `linear_accuracy_<feature>`.
  """
  (train_features, train_labels), (test_features, test_labels) = train, test
  metrics = {}
  for name, features in train_features.items():
    for metric in knn_metrics:
      suffix = "" if metric == "l2" else f"_{metric}"
      metrics[f"knn_1_accuracy{suffix}_{name}"] = nearest_neighbor_accuracy(
          features, train_labels, test_features[name], test_labels, mesh, metric)
    if probe:
      metrics[f"linear_accuracy_{name}"] = linear_probe_accuracy(
          features, train_labels, test_features[name], test_labels, mesh)
  return metrics
