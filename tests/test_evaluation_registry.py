"""evaluation/registry.py: evaluators by name, each at its own cadence, with a clear record
of the ones that cannot run; and the trainer running them so."""

import json
import pathlib

import ml_collections
import pytest

from bigbigan import train
from bigbigan.errors import ConfigError
from bigbigan.evaluation import registry
from bigbigan.evaluation.context import RESULTS_KEY, EvaluationContext, MetricUnavailable


class _Recorder:
  """A fake evaluator: records the steps it ran at and what earlier evaluators found."""

  def __init__(self, name: str, calls: list, unavailable: bool = False):
    self._name, self._calls, self._unavailable = name, calls, unavailable

  def __call__(self, context: EvaluationContext):  # Built like a registered class.
    self._context = context
    return self

  def run(self, predict, state, step: int) -> dict:
    self._calls.append((self._name, step, dict(self._context.shared[RESULTS_KEY])))
    if self._unavailable:
      raise MetricUnavailable(f"{self._name} needs what this run lacks")
    return {f"{self._name}_value": float(step)}


@pytest.fixture
def fake_registry(monkeypatch):
  calls = []
  monkeypatch.setattr(registry, "EVALUATORS", {
      "first": _Recorder("first", calls), "second": _Recorder("second", calls),
      "broken": _Recorder("broken", calls, unavailable=True)})
  return calls


def _context(**fields) -> EvaluationContext:
  config = ml_collections.ConfigDict({"eval_every_steps": 10, "eval_metrics": ("first",),
                                      **fields})
  return EvaluationContext(config, mesh=None, workdir="", data=None,
                           initial_state=lambda: None)


def test_each_evaluator_runs_at_its_own_cadence(fake_registry):
  evaluation = registry.Evaluation(_context(eval_every_steps_per_metric={"second": 30,
                                                                         "first": 0}),
                                   names=("second", "first"))
  assert evaluation.names == ("first", "second")  # The registry's order.
  assert evaluation.every_steps == {"first": 10, "second": 30}
  due = {step: evaluation.due_names(step) for step in range(1, 61)}
  assert {step: names for step, names in due.items() if names} == {
      10: ("first",), 20: ("first",), 30: ("first", "second"), 40: ("first",),
      50: ("first",), 60: ("first", "second")}
  assert evaluation.run(None, None, 30, due[30]) == {"first_value": 30.0,
                                                     "second_value": 30.0}
  # Later evaluators see what earlier ones found in the same evaluation (the reports' title).
  assert fake_registry == [("first", 30, {}), ("second", 30, {"first_value": 30.0})]
  fake_registry.clear()
  assert evaluation.run(None, None, 40, due[40]) == {"first_value": 40.0}
  assert [name for name, _, _ in fake_registry] == ["first"]


def test_an_unavailable_metric_is_named_and_the_others_still_run(fake_registry):
  evaluation = registry.Evaluation(_context(), names=("first", "broken", "second"))
  assert evaluation.run(None, None, 10) == {"first_value": 10.0, "second_value": 10.0}
  assert evaluation.errors == {"broken": "broken needs what this run lacks"}
  assert [name for name, _, _ in fake_registry] == ["first", "second", "broken"]


def test_unknown_metric_names_are_refused(fake_registry):
  with pytest.raises(ConfigError, match=r"unknown metrics \['fidd'\]"):
    registry.Evaluation(_context(), names=("first", "fidd"))


@pytest.mark.slow
def test_the_trainer_evaluates_each_metric_at_its_cadence(tmp_path, tiny_config):
  """mode_coverage every 40 steps while the default cadence is 20: evaluated at 40, 80 and
  the last step (100), and no other step carries its metrics."""
  config = tiny_config("bigan", total_steps=100, eval_every_steps=20, log_every_steps=20,
                       checkpoint_every_steps=100)
  config.eval_every_steps_per_metric.mode_coverage = 40
  train.train_and_evaluate(config, str(tmp_path))
  lines = [json.loads(line)
           for line in (pathlib.Path(tmp_path) / "metrics.jsonl").read_text().splitlines()]
  evaluated = sorted(line["step"] for line in lines if "modes_covered" in line)
  assert evaluated == [40, 80, 100]
  assert sorted(p.name for p in tmp_path.glob("mixture_*.png")) == [
      "mixture_0000040.png", "mixture_0000080.png", "mixture_0000100.png"]
