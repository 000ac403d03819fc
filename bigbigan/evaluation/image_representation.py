"""The encoder's features on an image dataset, by the paper's protocols: `linear_probe`
and `knn`, with the EMA encoder and its standing BatchNorm statistics.

  linear_probe  a logistic regression on each of `config.eval_features`
                (streaming_probe.py), fitted on `probe_train_split`, early-stopped on
                `probe_train_val_split` (the paper's 10,000 held-out training images),
                top-1 and top-5 on `eval_split`. Features are computed once and held in
                memory with `config.probe_in_memory` (small datasets), otherwise recomputed
                by the sharded encoder on every pass (ImageNet: 1.28M x 16,384 floats do
                not fit in memory).
  knn           k-NN accuracy (k in `config.knn_ks`, cosine) of `eval_split` against the
                labelled `knn_train_split` (held in host memory), and of the held-out
                `probe_train_val_split` (`knn_1_train_val_accuracy_cosine`: the default
                `selection_metric` by which the best checkpoint is kept).

Each also measures the headline feature (`eval_features[0]`) of the encoder at its random
initialisation, once per run (`*_random_init`): the reference that learned features must
beat. Features of a split are computed once per evaluation for both evaluators.
"""

import functools
from typing import Sequence

from bigbigan.data import pipeline
from bigbigan.evaluation import streaming_probe
from bigbigan.evaluation.context import FEATURES, EvaluationContext, MetricUnavailable
from bigbigan.evaluation.knn import knn_accuracy
from bigbigan.evaluation.representation import compute_features
from bigbigan.families.common import PredictFns
from bigbigan.state import TrainState


class _EncoderFeatures:
  """What both evaluators share: the labels' classes, and features of splits."""

  # The metric names under which the headline feature's results are also reported.
  ALIASES: tuple[str, ...] = ()
  # The registry keeps features of a split for the evaluators that say so.
  USES_FEATURES = True

  def __init__(self, context: EvaluationContext):
    self._context = context
    self._config = config = context.config
    features = pipeline.prepared_builder(config.dataset, config.data_dir).info.features
    # The probe's classes: the labels of the dataset (10 for MNIST, 1,000 for ImageNet).
    self._num_classes = features["label"].num_classes if "label" in features else None
    self._random_init = None

  def _feature_fn(self, predict: PredictFns, state: TrainState, names: Sequence[str]):
    def features(images):
      outputs = predict.encode(state, predict.normalise(images))
      return {name: outputs[name] for name in names}
    return features

  def _features(self, predict: PredictFns, state: TrainState, which: str, split: str,
                names: Sequence[str]):
    """({name: [N, D]}, [N] labels) of `split` in host memory, computed once per evaluation
    for the state `which` ("trained" or "initial")."""
    c = self._config

    def compute():
      return compute_features(self._feature_fn(predict, state, names),
                              self._context.data.eval_batches(split), self._context.mesh,
                              what=f"features of {split}",
                              total=pipeline.num_examples(c.dataset, split, c.data_dir))

    return self._context.once_per_round((FEATURES, which, split, tuple(names)), compute)

  def _metrics(self, predict: PredictFns, state: TrainState, which: str,
               names: Sequence[str]) -> dict:
    raise NotImplementedError

  def run(self, predict: PredictFns, state: TrainState, step: int) -> dict:
    del step
    if predict.encode is None:
      return {}  # The no-encoder GAN: no features.
    if self._num_classes is None:
      raise MetricUnavailable(f"{self._config.dataset} has no class labels: the linear probe "
                              "and k-NN need a labelled dataset")
    headline = self._config.eval_features[0]
    if self._random_init is None:
      # One initial state per evaluation for both evaluators (its standing statistics take
      # forwards of their own).
      initial = self._context.once_per_round("initial_state", self._context.initial_state)
      found = self._metrics(predict, initial, "initial", [headline])
      self._random_init = {f"{metric}_random_init": found[f"{metric}_{headline}"]
                           for metric in self.ALIASES[:1] if f"{metric}_{headline}" in found}
    found = self._metrics(predict, state, "trained", self._config.eval_features)
    aliases = {metric: found[f"{metric}_{headline}"] for metric in self.ALIASES
               if f"{metric}_{headline}" in found}
    return {**self._random_init, **found, **aliases}


class LinearProbe(_EncoderFeatures):
  """The `linear_probe` evaluator."""

  ALIASES = ("linear_accuracy",)

  def _metrics(self, predict: PredictFns, state: TrainState, which: str,
               names: Sequence[str]) -> dict:
    c, mesh = self._config, self._context.mesh
    splits = (c.probe_train_split, c.probe_train_val_split, c.eval_split)
    options = dict(epochs=c.probe_epochs, learning_rate=c.probe_learning_rate,
                   patience=c.probe_patience or None)
    metrics = {}
    for name in names:
      if c.probe_in_memory:
        data = [self._features(predict, state, which, split, names) for split in splits]
        result = streaming_probe.train_linear_probe_in_memory(
            *[(features[name], labels) for features, labels in data], self._num_classes,
            mesh, batch_size=c.eval_batch_size, seed=c.seed, **options)
      else:
        # Not jitted again: `encode` is, and a jit here would embed the state as constants.
        fn = lambda images, name=name: self._feature_fn(predict, state, [name])(images)[name]
        streams = [streaming_probe.feature_batches(
            functools.partial(self._context.data.eval_batches, split), fn, mesh)
            for split in splits]
        result = streaming_probe.train_linear_probe(*streams, self._num_classes, mesh,
                                                    **options)
      metrics.update({f"linear_accuracy_{name}": result.validation_top1,
                      f"linear_top5_accuracy_{name}": result.validation_top5,
                      f"linear_train_val_accuracy_{name}": max(result.train_val_top1),
                      f"linear_best_epoch_{name}": result.best_epoch})
    return metrics


class NearestNeighbours(_EncoderFeatures):
  """The `knn` evaluator: accuracies on eval_split and, to select checkpoints by, on the
  held-out probe_train_val_split (`knn_{k}_train_val_accuracy_cosine_{name}`)."""

  ALIASES = ("knn_1_accuracy_cosine", "knn_1_train_val_accuracy_cosine")

  def _metrics(self, predict: PredictFns, state: TrainState, which: str,
               names: Sequence[str]) -> dict:
    c = self._config
    train_features, train_labels = self._features(predict, state, which, c.knn_train_split,
                                                  names)
    metrics = {}
    for split, infix in ((c.eval_split, ""), (c.probe_train_val_split, "train_val_")):
      test_features, test_labels = self._features(predict, state, which, split, names)
      for name in names:
        accuracies = knn_accuracy(train_features[name], train_labels, test_features[name],
                                  test_labels, self._context.mesh, ks=tuple(c.knn_ks),
                                  metric="cosine")
        metrics.update({f"knn_{k}_{infix}accuracy_cosine_{name}": accuracy
                        for k, accuracy in accuracies.items()})
    return metrics

