"""The model families, by `config.network`: the one place where the tools choose between them.

    family = families.of(config)
    families.validate_config(config, num_devices)
    networks = family.build_networks(config)
    init, abstract_state = families.jitted_initializer(config, networks, mesh)
    update = family.make_update(config, networks, mesh)        # (state, batch) -> ...
    data = family.make_data(config, mesh)                      # the training data
    predict = family.make_predict_fns(config, networks, mesh)  # for the evaluators

A family is a module with:
  validate_config(config, num_devices, num_processes)  ConfigError for its fields;
  validate_networks(config)  ConfigError for the fields that shape its networks and update
    (all that tools which build them without training data need);
  build_networks(config) -> models.networks.Networks;
  state_initializer(config, networks) -> (rng -> TrainState), pure;
  make_update(config, networks, mesh) -> the jitted (state, batch) -> (state, metrics);
  make_data(config, mesh) -> its training data: `train_batches(start_step)`, `normalise`,
    `batch_axis`, `num_classes`, `make_inference_state_fn(networks)` (the state as
    evaluation and checkpoints hold it) and, for datasets with splits, `eval_batches(split)`;
  make_predict_fns(config, networks, mesh) -> common.PredictFns;
  eval_metrics(config) -> the evaluators (evaluation/registry.py) the config may name;
  example_inputs(config, network name) -> {input: abstract array} (bigbigan.summary).

Adding a family is one module here and one line in FAMILIES.
"""

import importlib
from types import ModuleType
from typing import Any, Callable

import jax
import ml_collections

from bigbigan import config_validation
from bigbigan import sharding

# config.network -> the family's module (imported when first asked for).
FAMILIES = {
    "mlp": "bigbigan.families.bigan",
    "biggan": "bigbigan.families.bigbigan",
}


def of(config: ml_collections.ConfigDict) -> ModuleType:
  """The family module of `config.network`.

  Raises:
    ConfigError: an unknown `config.network`.
  """
  config_validation.choice(config, "network", tuple(FAMILIES))
  return importlib.import_module(FAMILIES[config.network])


def validate_config(config: ml_collections.ConfigDict, num_devices: int,
                    num_processes: int = 1) -> None:
  """Raises ConfigError with a one-line message for the first unusable field: the fields
  every config has (config_validation.py), then the family's own."""
  family = of(config)
  config_validation.validate_common(config)
  family.validate_config(config, num_devices, num_processes)


def validate_networks(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError with a one-line message for the first unusable field among those
  that shape the family's networks and update: the checks of the tools that build them
  without training data (bigbigan.benchmark, bigbigan.summary), whose configs may hold
  no data fields (configs/biggan.py)."""
  of(config).validate_networks(config)


def jitted_initializer(config: ml_collections.ConfigDict, networks, mesh
                       ) -> tuple[Callable[[jax.Array], Any], Any]:
  """(rng -> the config's initial state laid out on `mesh` as training keeps it
  (sharding.state_shardings), its abstract state): the one initial-state program that
  training, evaluation's random-init reference and the tools compile, so each config
  compiles it once (and a restarted job loads it from the compilation cache)."""
  init = of(config).state_initializer(config, networks)
  abstract = sharding.abstract_state(jax.eval_shape(init, jax.random.PRNGKey(0)), mesh)
  layout = jax.tree.map(lambda leaf: leaf.sharding, abstract)
  return jax.jit(init, out_shardings=layout), abstract


def initial_state_for_evaluation(config: ml_collections.ConfigDict, networks, mesh,
                                 for_inference: Callable) -> Callable[[], Any]:
  """() -> the run's own initial state (from `config.seed`, as training starts), as
  evaluation holds states (`for_inference`: e.g. with the standing statistics of its random
  networks): the reference that the random-init metrics measure."""
  init, _ = jitted_initializer(config, networks, mesh)
  return lambda: for_inference(init(jax.random.PRNGKey(config.seed)))


def create_state_and_update(config: ml_collections.ConfigDict, mesh, seed: int = 0
                            ) -> tuple[Any, Callable]:
  """The config's initial state, laid out on `mesh` as training keeps it
  (sharding.state_shardings), and its family's jitted update."""
  family = of(config)
  networks = family.build_networks(config)
  init, _ = jitted_initializer(config, networks, mesh)
  state = init(jax.random.PRNGKey(seed))
  return state, family.make_update(config, networks, mesh)
