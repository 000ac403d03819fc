"""What every evaluator is built from, once per run: the config, the mesh, the run's
directory, the family's data, and the run's initial state (for the random-init references).

Evaluators get the state and the family's predict functions at each run; they import no
update module.
"""

import dataclasses
from typing import Any, Callable

import ml_collections
from jax.sharding import Mesh

from bigbigan.state import TrainState


# The key of an evaluation's results so far in `EvaluationContext.shared`: evaluators that run
# later in the same evaluation read them (the reports' title quotes the accuracy).
RESULTS_KEY = "results"
# The first element of the keys of features held for an evaluation (`shared`).
FEATURES = "features"


class MetricUnavailable(Exception):
  """A metric cannot run (e.g. no Inception weights); the message says why and the fix."""


@dataclasses.dataclass
class EvaluationContext:
  """The run as the evaluators see it.

  Attributes:
    config: the run's config.
    mesh: the device mesh.
    workdir: where figures and cached reference statistics go (local or gs://).
    data: the family's data (families/): `eval_batches(split)` for datasets with splits;
      the mixture's `mixture`.
    initial_state: returns the run's state at initialisation, as evaluation holds it (with
      the standing statistics of its random networks, as trained ones get theirs).
    shared: what evaluators of one evaluation share (features of a split, Inception
      outputs of the samples), emptied before each evaluation (`new_round`).
    run_wide: what evaluators share for the whole run (e.g. the loaded Inception network).
  """

  config: ml_collections.ConfigDict
  mesh: Mesh
  workdir: str
  data: Any
  initial_state: Callable[[], TrainState]
  shared: dict = dataclasses.field(default_factory=dict)
  run_wide: dict = dataclasses.field(default_factory=dict)

  def new_round(self) -> None:
    self.shared.clear()

  def forget(self, kind: str) -> None:
    """Drops what this evaluation holds under keys (kind, ...), e.g. FEATURES."""
    for key in [key for key in self.shared if isinstance(key, tuple) and key[0] == kind]:
      del self.shared[key]

  def once_per_round(self, key, compute: Callable[[], Any]) -> Any:
    """compute(), or what it returned earlier in this evaluation for `key`."""
    if key not in self.shared:
      self.shared[key] = compute()
    return self.shared[key]
