"""Checks a config before anything is built or written, naming the field and what is allowed."""

import ml_collections

from bigbigan import losses
from bigbigan import steps
from bigbigan.errors import ConfigError
from bigbigan.models import mlp
from bigbigan.models.networks import ENCODER_KINDS, NETWORK_KINDS

DATASETS = ("mixture",)
POSITIVE_INTEGERS = ("batch_size", "total_steps", "log_every_steps", "eval_every_steps",
                     "checkpoint_every_steps", "keep_checkpoints", "latent_dim", "eval_samples")
POSITIVE_NUMBERS = ("optimizer.generator_learning_rate", "optimizer.discriminator_learning_rate",
                    "optimizer.encoder_learning_rate_multiplier")


def _get(config: ml_collections.ConfigDict, field: str):
  value = config
  for part in field.split("."):
    value = value[part]
  return value


def _choice(config, field: str, allowed) -> None:
  value = _get(config, field)
  if value not in allowed:
    raise ConfigError(f"config.{field}={value!r} is unknown: allowed {tuple(allowed)}")


def validate_config(config: ml_collections.ConfigDict, num_devices: int,
                    num_processes: int = 1) -> None:
  """Raises ConfigError with a one-line message for the first unusable field."""
  for field in POSITIVE_INTEGERS:
    value = _get(config, field)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ConfigError(f"config.{field}={value!r}: must be a positive integer")
  for field in POSITIVE_NUMBERS:
    value = _get(config, field)
    if not isinstance(value, (int, float)) or not value > 0:
      raise ConfigError(f"config.{field}={value!r}: must be a positive number")
  if not config.discriminator.r1_weight >= 0:
    raise ConfigError(f"config.discriminator.r1_weight={config.discriminator.r1_weight!r}: "
                      "must be >= 0 (0 disables the R1 penalty)")
  if config.batch_size % num_devices:
    raise ConfigError(
        f"config.batch_size={config.batch_size} does not divide over {num_devices} devices: "
        f"use a multiple of {num_devices}")
  if config.batch_size % num_processes:
    raise ConfigError(
        f"config.batch_size={config.batch_size} does not divide over {num_processes} "
        f"processes: use a multiple of {num_processes}")
  _choice(config, "dataset", DATASETS)
  _choice(config, "network", NETWORK_KINDS)
  _choice(config, "encoder.kind", ENCODER_KINDS)
  _choice(config, "loss", losses.LOSS_KINDS)
  _choice(config, "update_mode", steps.UPDATE_MODES)
  _choice(config, "latent_prior", steps.PRIORS)
  for network in ("generator", "encoder", "discriminator"):
    _choice(config, f"{network}.activation", mlp.ACTIVATIONS)
  _choice(config, "generator.output_activation", mlp.OUTPUT_ACTIVATIONS)
