"""Checks of config fields, before anything is built or written, naming the field and what
is allowed: the fields every config has (`validate_common`) and the helpers with which each
family (families/) checks its own.

A leaf of the package: it reads nothing but the config. `families.validate_config` runs the
whole check; data/splits.py checks the split fields against the dataset's metadata.
"""

import numbers

import ml_collections

from bigbigan.errors import ConfigError

POSITIVE_INTEGERS = ("batch_size", "total_steps", "log_every_steps", "eval_every_steps",
                     "checkpoint_every_steps", "keep_checkpoints", "latent_dim")
NON_NEGATIVE_INTEGERS = ("seed", "ema_start_step")
POSITIVE_NUMBERS = ("optimizer.generator_learning_rate", "optimizer.discriminator_learning_rate",
                    "optimizer.encoder_learning_rate_multiplier")
# field: (low, high, whether high itself is allowed, what the message says is allowed)
RANGES = {
    "optimizer.b1": (0.0, 1.0, False, "in [0, 1)"),
    "optimizer.b2": (0.0, 1.0, False, "in [0, 1)"),
    "optimizer.lr_decay_start_fraction": (0.0, 1.0, True, "in [0, 1] (1 disables the decay)"),
    "optimizer.lr_decay_final_scale": (0.0, float("inf"), False, ">= 0"),
    "optimizer.weight_decay": (0.0, float("inf"), False, ">= 0"),
    "discriminator.r1_weight": (0.0, float("inf"), False, ">= 0 (0 disables the R1 penalty)"),
    "joint_latent_regressor_weight": (0.0, float("inf"), False, ">= 0"),
    "ema_decay": (0.0, 1.0, False, "in [0, 1) (0 keeps no moving average)"),
}
# The per-metric evaluation cadence: {metric: steps}, 0 for `eval_every_steps`.
EVAL_CADENCE_FIELD = "eval_every_steps_per_metric"


def get(config: ml_collections.ConfigDict, field: str):
  """The value of a dotted field, e.g. "optimizer.b1"."""
  value = config
  for part in field.split("."):
    value = value[part]
  return value


def is_integer(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def choice(config, field: str, allowed) -> None:
  value = get(config, field)
  if value not in allowed:
    raise ConfigError(f"config.{field}={value!r} is unknown: allowed {tuple(allowed)}")


def divides(config, field: str, parts: int, what: str) -> None:
  value = get(config, field)
  if value % parts:
    raise ConfigError(f"config.{field}={value} does not divide over {parts} {what}: "
                      f"use a multiple of {parts}")


def check_numbers(config, positive_integers, non_negative_integers, positive_numbers,
                  ranges) -> None:
  """Each field of the lists is of its kind; each of `ranges` (names of RANGES) in range."""
  for field in positive_integers:
    value = get(config, field)
    if not is_integer(value) or value <= 0:
      raise ConfigError(f"config.{field}={value!r}: must be a positive integer")
  for field in non_negative_integers:
    value = get(config, field)
    if not is_integer(value) or value < 0:
      raise ConfigError(f"config.{field}={value!r}: must be an integer >= 0")
  for field in positive_numbers:
    value = get(config, field)
    if not is_number(value) or not value > 0:
      raise ConfigError(f"config.{field}={value!r}: must be a positive number")
  for field in ranges:
    low, high, high_allowed, allowed = RANGES[field]
    value = get(config, field)
    if not is_number(value) or not (low <= value < high or (high_allowed and value == high)):
      raise ConfigError(f"config.{field}={value!r}: must be {allowed}")


def validate_common(config: ml_collections.ConfigDict) -> None:
  """The fields that every config has, whatever its family."""
  value = config.get("checkpoint_dir", "")
  if not isinstance(value, str) or (value and not value.strip()):
    raise ConfigError(f"config.checkpoint_dir={value!r}: must be a directory (local or e.g. "
                      "gs://bucket/checkpoints) or '' for <workdir>/checkpoints")


def eval_metrics(config: ml_collections.ConfigDict, allowed) -> None:
  """`config.eval_metrics`, a tuple of the evaluators `allowed` for the config, and the
  per-metric cadence (`eval_every_steps_per_metric`: {metric: steps, 0 for the default})."""
  metrics = config.get("eval_metrics")
  if not isinstance(metrics, (tuple, list)) or not set(metrics) <= set(allowed):
    raise ConfigError(f"config.eval_metrics={metrics!r}: a tuple of {tuple(allowed)}")
  cadence = config.get(EVAL_CADENCE_FIELD) or {}
  for metric, steps in cadence.items():
    if metric not in allowed:
      raise ConfigError(f"config.{EVAL_CADENCE_FIELD}.{metric}: unknown metric; allowed "
                        f"{tuple(allowed)}")
    if not is_integer(steps) or steps < 0:
      raise ConfigError(f"config.{EVAL_CADENCE_FIELD}.{metric}={steps!r}: must be an integer "
                        ">= 0 (0: every config.eval_every_steps)")
