"""Loads an experiment config file the way `--config=path.py[:variant]` does, for notebooks,
benchmarks and tests."""

import importlib.util
import os

import ml_collections


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Returns `get_config()` (or `get_config(variant)`) of `spec` = "path/to/config.py[:variant]".

  Args:
    spec: a config file path, optionally followed by ":variant", e.g.
      "configs/mixture.py:ali".
  """
  path, _, variant = spec.partition(":")
  # A config is Python code that importlib loads, from a local file (as --config does).
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path} not found")
  module_spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def epochs_to_steps(epochs: float, num_examples: int, batch_size: int) -> int:
  """Training steps for `epochs` passes over `num_examples` at `batch_size`.

  The input pipeline's batches run across epoch boundaries, so no example is dropped and an
  epoch is num_examples / batch_size steps, not a whole number in general.
  """
  return int(round(epochs * num_examples / batch_size))


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: dict[str, object]) -> ml_collections.ConfigDict:
  """Sets {"field.subfield": value, ...} in `config` (as --config.field.subfield=value does)
  and returns it."""
  for field, value in overrides.items():
    node = config
    *parents, leaf = field.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def flatten(tree: dict, prefix: str = "") -> dict:
  """A config's nested dict (its JSON) as {"field.subfield": value}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat
