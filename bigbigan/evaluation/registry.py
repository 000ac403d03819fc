"""The evaluators by metric name, and the periodic evaluation that runs the ones a config
names (`config.eval_metrics`), each at its own cadence.

    evaluation = Evaluation(context, names)          # context.py
    if evaluation.due(step):
      results = evaluation.run(predict, state, step)

An evaluator is a class built once per run from the EvaluationContext, with
`run(predict, state, step) -> {metric: value}` (scalars, and [1, H, W, C] images for
TensorBoard). Its cadence is `config.eval_every_steps_per_metric[name]`, or
`config.eval_every_steps` where that is absent or 0. An evaluator that raises
MetricUnavailable (no Inception weights, an unlabelled dataset) is reported in `errors`
with its reason, and the others still run.
"""

from typing import Optional, Sequence

from absl import logging

from bigbigan.config_validation import EVAL_CADENCE_FIELD
from bigbigan.errors import ConfigError
from bigbigan.evaluation.context import (FEATURES, RESULTS_KEY, EvaluationContext,
                                         MetricUnavailable)
from bigbigan.evaluation.image_generation import FrechetInceptionDistance, InceptionScore
from bigbigan.evaluation.image_reports import Reports
from bigbigan.evaluation.image_representation import LinearProbe, NearestNeighbours
from bigbigan.evaluation.mixture_modes import ModeCoverage
from bigbigan.evaluation.mnist_representation import MnistRepresentation
from bigbigan.evaluation.reconstruction_labels import ReconstructionLabels
from bigbigan.families.common import PredictFns
from bigbigan.state import TrainState

EVALUATORS = {
    "mode_coverage": ModeCoverage,
    "mnist_representation": MnistRepresentation,
    "linear_probe": LinearProbe,
    "knn": NearestNeighbours,
    "reconstruction_labels": ReconstructionLabels,
    # IS before FID: the samples' one Inception pass keeps the logits only if IS runs.
    "is": InceptionScore,
    "fid": FrechetInceptionDistance,
    # Last: its figures' title quotes the accuracies of the evaluation.
    "reports": Reports,
}


class Evaluation:
  """The evaluators of `names` (default: `config.eval_metrics`), in EVALUATORS' order."""

  def __init__(self, context: EvaluationContext, names: Optional[Sequence[str]] = None):
    config = context.config
    names = tuple(config.eval_metrics if names is None else names)
    unknown = sorted(set(names) - set(EVALUATORS))
    if unknown:
      raise ConfigError(f"unknown metrics {unknown}: allowed {tuple(EVALUATORS)}")
    self._context = context
    self.names = tuple(name for name in EVALUATORS if name in names)
    self._evaluators = {name: EVALUATORS[name](context) for name in self.names}
    cadence = dict(config.get(EVAL_CADENCE_FIELD) or {})
    self.every_steps = {name: cadence.get(name) or config.eval_every_steps
                        for name in self.names}
    self.errors: dict[str, str] = {}  # Metric -> why it did not run, for the last run.

  def due_names(self, step: int) -> tuple[str, ...]:
    return tuple(name for name in self.names if step % self.every_steps[name] == 0)

  def due(self, step: int) -> bool:
    return bool(self.due_names(step))

  def run(self, predict: PredictFns, state: TrainState, step: int,
          names: Optional[Sequence[str]] = None) -> dict:
    """The metrics of the evaluators `names` (default: all of this evaluation's).

    Features of a split are held for the evaluators of this evaluation that use them
    (`USES_FEATURES`), and dropped after the last of them.
    """
    names = [name for name in self.names if name in (self.names if names is None else names)]
    self._context.new_round()
    metrics, self.errors = {}, {}
    try:
      for position, name in enumerate(names):
        evaluator = self._evaluators[name]
        # Later evaluators of this evaluation may read what earlier ones found (reports).
        self._context.shared[RESULTS_KEY] = metrics
        try:
          metrics.update(evaluator.run(predict, state, step))
        except MetricUnavailable as error:
          self.errors[name] = str(error)
          logging.error("Not computed: %s: %s", name, error)
        if not any(getattr(self._evaluators[later], "USES_FEATURES", False)
                   for later in names[position + 1:]):
          self._context.forget(FEATURES)
    finally:
      self._context.new_round()  # Frees the features and samples held for this evaluation.
    return metrics
