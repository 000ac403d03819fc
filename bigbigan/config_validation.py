"""Checks a config before anything is built or written, naming the field and what is allowed.

`validate_config` reads nothing but the config; `validate_splits` also reads the dataset's
metadata (its split sizes), to refuse splits it lacks and evaluation splits that share
examples with training ones.
"""

import numbers

import ml_collections

from bigbigan import bigbigan_steps
from bigbigan import checkpointing
from bigbigan import losses
from bigbigan import steps
from bigbigan import tasks
from bigbigan.data import images
from bigbigan.data import pipeline
from bigbigan.evaluation import images as image_evaluation
from bigbigan.errors import ConfigError
from bigbigan.models import biggan
from bigbigan.models import encoder as encoder_lib
from bigbigan.models import mlp
from bigbigan.models import resnet
from bigbigan.models.networks import COMPUTE_DTYPES, ENCODER_KINDS, NETWORK_KINDS

DATASETS = tuple(tasks.TASKS)
NETWORKS = ("generator", "encoder", "discriminator")
POSITIVE_INTEGERS = ("batch_size", "total_steps", "log_every_steps", "eval_every_steps",
                     "checkpoint_every_steps", "keep_checkpoints", "latent_dim")
NON_NEGATIVE_INTEGERS = ("seed", "ema_start_step")
POSITIVE_NUMBERS = ("optimizer.generator_learning_rate", "optimizer.discriminator_learning_rate",
                    "optimizer.encoder_learning_rate_multiplier")
# The fields each dataset adds: (positive integers, non-negative integers, positive numbers).
DATASET_FIELDS = {
    "mixture": (("eval_samples", "mixture.modes_per_axis", "mixture.num_train",
                 "mixture.num_eval"), ("mixture.data_seed",), ("mixture.std", "mixture.spacing")),
    "mnist": (("eval_batch_size",), (), ()),
}
# BigBiGAN's (configs/bigbigan_base.py) in addition to the shared ones.
BIGBIGAN_POSITIVE_INTEGERS = ("d_steps", "accumulation_steps", "eval_batch_size",
                              "generator.ch", "discriminator.ch", "encoder.width",
                              "encoder.base_width", "encoder.head_width", "encoder.head_depth",
                              "encoder.resolution", "probe_epochs", "fid_samples",
                              "report_neighbour_pool")
BIGBIGAN_NON_NEGATIVE_INTEGERS = ("probe_patience", "standing_stats_batches")
BIGBIGAN_POSITIVE_NUMBERS = ("probe_learning_rate",)
BIGBIGAN_RANGES = ("optimizer.b1", "optimizer.b2", "optimizer.lr_decay_start_fraction",
                   "optimizer.lr_decay_final_scale", "optimizer.weight_decay", "ema_decay")
# The config fields that name TFDS splits (MNIST's configs have the first and the eval one;
# BigBiGAN's all of them).
SPLIT_FIELDS = ("train_split", "probe_train_split", "probe_train_val_split", "knn_train_split",
                "eval_split", "fid_reference_split")
# Pairs of fields that must share no example: the linear probe's fit, early-stopping and test
# splits, and the test split against every split that a model or classifier learns from.
# (k-NN may search the probe's training images, and FID's reference is any real images.)
DISJOINT_SPLITS = (("probe_train_split", "probe_train_val_split"),
                   ("probe_train_split", "eval_split"),
                   ("probe_train_val_split", "eval_split"),
                   ("train_split", "eval_split"),
                   ("knn_train_split", "eval_split"),
                   # The k-NN on train_val selects checkpoints: its queries are held out.
                   ("knn_train_split", "probe_train_val_split"))
ENCODER_OUTPUTS = ("avepool_feat", "bn_crelu_feat", "z_mean")
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


def _get(config: ml_collections.ConfigDict, field: str):
  value = config
  for part in field.split("."):
    value = value[part]
  return value


def _is_integer(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _choice(config, field: str, allowed) -> None:
  value = _get(config, field)
  if value not in allowed:
    raise ConfigError(f"config.{field}={value!r} is unknown: allowed {tuple(allowed)}")


def _divides(config, field: str, parts: int, what: str) -> None:
  value = _get(config, field)
  if value % parts:
    raise ConfigError(f"config.{field}={value} does not divide over {parts} {what}: "
                      f"use a multiple of {parts}")


def _check_numbers(config, positive_integers, non_negative_integers, positive_numbers,
                   ranges) -> None:
  for field in positive_integers:
    value = _get(config, field)
    if not _is_integer(value) or value <= 0:
      raise ConfigError(f"config.{field}={value!r}: must be a positive integer")
  for field in non_negative_integers:
    value = _get(config, field)
    if not _is_integer(value) or value < 0:
      raise ConfigError(f"config.{field}={value!r}: must be an integer >= 0")
  for field in positive_numbers:
    value = _get(config, field)
    if not _is_number(value) or not value > 0:
      raise ConfigError(f"config.{field}={value!r}: must be a positive number")
  for field in ranges:
    low, high, high_allowed, allowed = RANGES[field]
    value = _get(config, field)
    if not _is_number(value) or not (low <= value < high or (high_allowed and value == high)):
      raise ConfigError(f"config.{field}={value!r}: must be {allowed}")


def validate_config(config: ml_collections.ConfigDict, num_devices: int,
                    num_processes: int = 1) -> None:
  """Raises ConfigError with a one-line message for the first unusable field."""
  _choice(config, "network", NETWORK_KINDS)
  _validate_checkpoint_dir(config)
  if config.network == "biggan":
    _validate_bigbigan(config, num_devices, num_processes)
    return
  _choice(config, "dataset", DATASETS)
  positive_integers, non_negative_integers, positive_numbers = DATASET_FIELDS[config.dataset]
  _check_numbers(config, POSITIVE_INTEGERS + positive_integers,
                 NON_NEGATIVE_INTEGERS + non_negative_integers,
                 POSITIVE_NUMBERS + positive_numbers, tuple(RANGES))
  for network in NETWORKS:
    sizes = _get(config, f"{network}.hidden_sizes")
    if (not isinstance(sizes, (tuple, list)) or not sizes or
        not all(_is_integer(s) and s > 0 for s in sizes)):
      raise ConfigError(f"config.{network}.hidden_sizes={sizes!r}: must be a non-empty "
                        "tuple of positive integers, e.g. (128, 128)")

  _divides(config, "batch_size", num_devices, "devices")
  _divides(config, "batch_size", num_processes, "processes")
  if config.get("accumulation_steps", 1) != 1:
    raise ConfigError(f"config.accumulation_steps={config.accumulation_steps!r}: gradient "
                      "accumulation is BigBiGAN's (network='biggan'); set it to 1 here")
  if config.dataset == "mixture" and config.mixture.num_train < config.batch_size:
    raise ConfigError(f"config.mixture.num_train={config.mixture.num_train} is smaller than "
                      f"config.batch_size={config.batch_size}: raise it or lower the batch")
  if config.dataset == "mnist":
    _divides(config, "eval_batch_size", num_devices, "devices")
    _divides(config, "eval_batch_size", num_processes, "processes")
    seed = config.pixel_permutation_seed
    if seed is not None and (not _is_integer(seed) or seed < 0):
      raise ConfigError(f"config.pixel_permutation_seed={seed!r}: must be None (no "
                        "permutation) or an integer >= 0")

  _choice(config, "objective", steps.OBJECTIVES)
  if config.objective == "autoencoder":
    _choice(config, "reconstruction_loss", losses.RECONSTRUCTION_LOSSES)
  if config.objective != "adversarial" and config.encoder.kind == "none":
    raise ConfigError(f"config.objective={config.objective!r} needs an encoder: set "
                      "config.encoder.kind to 'deterministic' or 'stochastic'")
  conditional = config.conditional
  if not isinstance(conditional, bool):
    raise ConfigError(f"config.conditional={conditional!r}: must be True or False")
  if conditional and config.dataset != "mnist":
    raise ConfigError(f"config.conditional=True needs a labelled dataset: allowed with "
                      f"dataset 'mnist', not {config.dataset!r}")
  if conditional and config.objective == "autoencoder":
    raise ConfigError("config.conditional=True is for the adversarial objectives: set "
                      "config.objective to 'adversarial' or a latent regressor")
  _choice(config, "encoder.kind", ENCODER_KINDS)
  _choice(config, "loss", losses.LOSS_KINDS)
  _choice(config, "update_mode", steps.UPDATE_MODES)
  _choice(config, "latent_prior", steps.PRIORS)
  for network in NETWORKS:
    _choice(config, f"{network}.activation", mlp.ACTIVATIONS)
  for network in ("generator", "encoder"):
    _choice(config, f"{network}.output_activation", mlp.OUTPUT_ACTIVATIONS)


def _validate_checkpoint_dir(config: ml_collections.ConfigDict) -> None:
  """config.checkpoint_dir: "" (<workdir>/checkpoints) or a directory, local or a URL."""
  value = config.get("checkpoint_dir", "")
  if not isinstance(value, str) or (value and not value.strip()):
    raise ConfigError(f"config.checkpoint_dir={value!r}: must be a directory (local or e.g. "
                      "gs://bucket/checkpoints) or '' for <workdir>/checkpoints")


def _validate_bigbigan(config: ml_collections.ConfigDict, num_devices: int,
                       num_processes: int) -> None:
  """The fields of a BigBiGAN config (configs/bigbigan_base.py)."""
  if "dataset" not in config:
    raise ConfigError("the config has no training data: configs/biggan.py holds BigBiGAN's "
                      "networks only; train with configs/bigbigan_base.py, resnet50.py or "
                      "revnet4x.py")
  dataset = config.dataset
  if not isinstance(dataset, str) or images.dataset_family(dataset) not in images.FRAMING:
    raise ConfigError(f"config.dataset={config.dataset!r} is unknown for BigBiGAN: allowed "
                      f"{tuple(images.FRAMING)} (any of their TFDS configs; a directory of "
                      f"images as 'folder:/path/to/images')")
  _check_numbers(config, POSITIVE_INTEGERS + BIGBIGAN_POSITIVE_INTEGERS,
                 NON_NEGATIVE_INTEGERS + BIGBIGAN_NON_NEGATIVE_INTEGERS,
                 POSITIVE_NUMBERS + BIGBIGAN_POSITIVE_NUMBERS, BIGBIGAN_RANGES)
  _choice(config, "latent_prior", steps.PRIORS)
  _choice(config, "batch_norm_scope", bigbigan_steps.BATCH_NORM_SCOPES)
  _choice(config, "compute_dtype", COMPUTE_DTYPES)
  _choice(config, "resolution", tuple(biggan.GENERATOR_WIDTHS))
  if config.num_classes:
    raise ConfigError(f"config.num_classes={config.num_classes!r}: BigBiGAN trains "
                      "unconditionally (a single label); set it to 0")
  _choice(config, "encoder.kind", ENCODER_KINDS)
  if config.encoder.kind != "none":
    _choice(config, "encoder.backbone", encoder_lib.BACKBONES)
    _choice(config, "encoder.depth", tuple(resnet.STAGE_UNITS))
    _choice(config, "encoder.latent_bound", encoder_lib.LATENT_BOUNDS)
    allowed = tuple(config.resolution * 2**k for k in range(3))
    if config.encoder.resolution not in allowed:
      raise ConfigError(f"config.encoder.resolution={config.encoder.resolution!r}: D sees E's "
                        f"images average-pooled 2x2 down to config.resolution="
                        f"{config.resolution}, so use one of {allowed}")
  if not config.eval_features or not set(config.eval_features) <= set(ENCODER_OUTPUTS):
    raise ConfigError(f"config.eval_features={config.eval_features!r}: a non-empty tuple of "
                      f"{ENCODER_OUTPUTS}")
  if not set(config.eval_metrics) <= set(image_evaluation.METRICS):
    raise ConfigError(f"config.eval_metrics={config.eval_metrics!r}: a tuple of "
                      f"{image_evaluation.METRICS}")
  if not config.knn_ks or not all(_is_integer(k) and k >= 1 for k in config.knn_ks):
    raise ConfigError(f"config.knn_ks={config.knn_ks!r}: a non-empty tuple of integers >= 1, "
                      "e.g. (1, 20)")
  for field in ("batch_size", "eval_batch_size"):
    _divides(config, field, num_devices, "devices")
    _divides(config, field, num_processes, "processes")
  per_device = config.batch_size // num_devices
  if per_device % config.accumulation_steps:
    raise ConfigError(f"config.accumulation_steps={config.accumulation_steps} does not divide "
                      f"the per-device batch {per_device} (config.batch_size="
                      f"{config.batch_size} over {num_devices} devices): use a divisor of "
                      f"{per_device}")
  _validate_selection(config)


# The periodic metric each selection metric comes from (evaluation/images.py).
SELECTION_SOURCES = {"knn_1_train_val_accuracy_cosine": "knn", "fid": "fid"}


def _validate_selection(config: ml_collections.ConfigDict) -> None:
  """The best-checkpoint selection: a metric that the periodic evaluation computes."""
  metric = config.get("selection_metric", "")
  if not metric:
    return
  _choice(config, "selection_mode", checkpointing.SELECTION_MODES)
  if metric not in SELECTION_SOURCES:
    raise ConfigError(f"config.selection_metric={metric!r}: allowed "
                      f"{tuple(SELECTION_SOURCES)}, or '' to keep the latest checkpoints only")
  source = SELECTION_SOURCES[metric]
  if source not in config.eval_metrics:
    raise ConfigError(f"config.selection_metric={metric!r} comes from the {source!r} "
                      f"evaluation, which config.eval_metrics={tuple(config.eval_metrics)!r} "
                      f"lacks: add it, or set selection_metric=''")
  if (source == "knn") == (config.encoder.kind == "none"):
    raise ConfigError(f"config.selection_metric={metric!r} does not fit "
                      f"config.encoder.kind={config.encoder.kind!r}: select encoders by "
                      "'knn_1_train_val_accuracy_cosine', the no-encoder GAN by 'fid'")


def validate_splits(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError unless every split field selects examples of the dataset and the
  evaluation splits are disjoint from the ones learned from (DISJOINT_SPLITS).

  Reads the dataset's TFDS metadata (no examples), or lists an image folder's files
  (data/folder.py: splits "train" and "validation"), so it runs at start, after
  `validate_config` and before anything is written. The mixture dataset, drawn in memory,
  has no splits.

  Raises:
    ConfigError: a split field names a split the dataset lacks, an empty slice or one past a
      split's end, or two fields of a DISJOINT_SPLITS pair share examples; an image folder
      is missing or holds no image.
    DatasetError: the dataset is not prepared (the message says how to prepare it).
  """
  if config.dataset == "mixture":
    return
  splits = pipeline.prepared_builder(config.dataset, config.get("data_dir")).info.splits
  ranges = {}
  for field in SPLIT_FIELDS:
    if field not in config:
      continue
    spec = config[field]
    if not isinstance(spec, str) or not spec.strip():
      raise ConfigError(f"config.{field}={spec!r}: must be a TFDS split such as 'train' or "
                        "'train[:10000]'")
    try:
      ranges[field] = pipeline.split_ranges(splits, spec)
    except ValueError as error:
      available = "; ".join(f"{name}, {info.num_examples} examples"
                            for name, info in splits.items())
      raise ConfigError(f"config.{field}={spec!r} cannot be read from {config.dataset}: "
                        f"{error} ({config.dataset}'s splits: {available}): name one of "
                        f"them, or a non-empty slice of one such as "
                        f"'{next(iter(splits))}[:10%]'") from error
  for first, second in DISJOINT_SPLITS:
    if first in ranges and second in ranges:
      shared = _shared_examples(ranges[first], ranges[second])
      if shared:
        name, start, stop = shared
        raise ConfigError(
            f"config.{first}={config[first]!r} and config.{second}={config[second]!r} share "
            f"examples {start}..{stop - 1} of split '{name}': evaluation must use held-out "
            f"examples; make them disjoint, e.g. {first}='{name}[10000:]' and "
            f"{second}='{name}[:10000]'")


def _shared_examples(first: dict, second: dict):
  """(split, start, stop) of the first examples that two `split_ranges` share, or None."""
  for name in sorted(set(first) & set(second)):
    for a_start, a_stop in first[name]:
      for b_start, b_stop in second[name]:
        start, stop = max(a_start, b_start), min(a_stop, b_stop)
        if start < stop:
          return name, start, stop
  return None
