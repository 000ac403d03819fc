"""The BigBiGAN family (`config.network="biggan"`): BigGAN's G, BigBiGAN's three-score D
and a ResNet or RevNet E on images (configs/bigbigan_base.py, resnet50.py, revnet4x.py).

What the trainer's tools take from a family (families/__init__.py): the config's checks,
the networks, the initial state, the update (bigbigan_update.py), the training data and its
standing statistics (bigbigan_data.py, standing_stats.py), and the predict functions
(bigbigan_predict.py).
"""

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from bigbigan import checkpointing
from bigbigan import config_validation as check
from bigbigan import optimizers as optimizers_lib
from bigbigan.errors import ConfigError
from bigbigan.families import bigbigan_predict
from bigbigan.families.bigbigan_update import BATCH_NORM_SCOPES, make_bigbigan_train_step
from bigbigan.families.common import PRIORS, PredictFns
from bigbigan.models import biggan
from bigbigan.models import encoder as encoder_lib
from bigbigan.models import resnet
from bigbigan.models.networks import (COMPUTE_DTYPES, ENCODER_KINDS, Networks,
                                      build_biggan_networks)
from bigbigan.state import TrainState, averaged_params, init_network

# The evaluators (evaluation/registry.py) that `config.eval_metrics` may name.
EVAL_METRICS = ("linear_probe", "knn", "reconstruction_labels", "fid", "is", "reports")
# The selection metrics (checkpointing.py's best checkpoint), with the evaluator of each.
SELECTION_SOURCES = {"knn_1_train_val_accuracy_cosine": "knn", "fid": "fid"}
ENCODER_OUTPUTS = ("avepool_feat", "bn_crelu_feat", "z_mean")

# The fields that shape the networks and the update: configs/biggan.py has them too.
NETWORK_POSITIVE_INTEGERS = ("latent_dim", "batch_size", "d_steps", "accumulation_steps",
                             "generator.ch", "discriminator.ch", "encoder.width",
                             "encoder.base_width", "encoder.head_width", "encoder.head_depth",
                             "encoder.resolution")
POSITIVE_INTEGERS = ("eval_batch_size", "probe_epochs", "fid_samples", "report_neighbour_pool")
NON_NEGATIVE_INTEGERS = ("probe_patience", "standing_stats_batches")
POSITIVE_NUMBERS = ("probe_learning_rate",)
RANGES = ("optimizer.b1", "optimizer.b2", "optimizer.lr_decay_start_fraction",
          "optimizer.lr_decay_final_scale", "optimizer.weight_decay", "ema_decay")


def validate_networks(config: ml_collections.ConfigDict) -> None:
  """The fields that shape the networks and the update: what the tools that build them
  without training data (bigbigan.benchmark, bigbigan.summary) need of a config."""
  check.check_numbers(config, NETWORK_POSITIVE_INTEGERS, (), check.POSITIVE_NUMBERS, RANGES)
  check.choice(config, "latent_prior", PRIORS)
  check.choice(config, "batch_norm_scope", BATCH_NORM_SCOPES)
  check.choice(config, "compute_dtype", COMPUTE_DTYPES)
  check.choice(config, "resolution", tuple(biggan.GENERATOR_WIDTHS))
  check.choice(config, "encoder.kind", ENCODER_KINDS)
  if config.encoder.kind != "none":
    check.choice(config, "encoder.backbone", encoder_lib.BACKBONES)
    check.choice(config, "encoder.depth", tuple(resnet.STAGE_UNITS))
    check.choice(config, "encoder.latent_bound", encoder_lib.LATENT_BOUNDS)
    allowed = tuple(config.resolution * 2**k for k in range(3))
    if config.encoder.resolution not in allowed:
      raise ConfigError(f"config.encoder.resolution={config.encoder.resolution!r}: D sees E's "
                        f"images average-pooled 2x2 down to config.resolution="
                        f"{config.resolution}, so use one of {allowed}")


def validate_config(config: ml_collections.ConfigDict, num_devices: int,
                    num_processes: int) -> None:
  """The fields of a BigBiGAN config (configs/bigbigan_base.py)."""
  if "dataset" not in config:
    raise ConfigError("the config has no training data: configs/biggan.py holds BigBiGAN's "
                      "networks only; train with configs/bigbigan_base.py, resnet50.py or "
                      "revnet4x.py")
  # Imported here: data/images.py imports TensorFlow, which the family's other tools do
  # not need.
  from bigbigan.data import images  # pylint: disable=g-import-not-at-top
  dataset = config.dataset
  family = images.dataset_family(dataset) if isinstance(dataset, str) else None
  if family not in images.FRAMING:
    raise ConfigError(f"config.dataset={config.dataset!r} is unknown for BigBiGAN: allowed "
                      f"{tuple(images.FRAMING)} (any of their TFDS configs; a "
                      "directory of images as 'folder:/path/to/images')")
  validate_networks(config)  # With the optimiser's numbers, which the update takes.
  check.check_numbers(config, check.POSITIVE_INTEGERS + POSITIVE_INTEGERS,
                      check.NON_NEGATIVE_INTEGERS + NON_NEGATIVE_INTEGERS, POSITIVE_NUMBERS, ())
  # The networks take a class (configs/biggan.py:conditional, BigGAN); training does not.
  if config.num_classes:
    raise ConfigError(f"config.num_classes={config.num_classes!r}: BigBiGAN trains "
                      "unconditionally (a single label); set it to 0")
  if not config.eval_features or not set(config.eval_features) <= set(ENCODER_OUTPUTS):
    raise ConfigError(f"config.eval_features={config.eval_features!r}: a non-empty tuple of "
                      f"{ENCODER_OUTPUTS}")
  check.eval_metrics(config, EVAL_METRICS)
  if not config.knn_ks or not all(check.is_integer(k) and k >= 1 for k in config.knn_ks):
    raise ConfigError(f"config.knn_ks={config.knn_ks!r}: a non-empty tuple of integers >= 1, "
                      "e.g. (1, 20)")
  for field in ("batch_size", "eval_batch_size"):
    check.divides(config, field, num_devices, "devices")
    check.divides(config, field, num_processes, "processes")
  per_device = config.batch_size // num_devices
  if per_device % config.accumulation_steps:
    raise ConfigError(f"config.accumulation_steps={config.accumulation_steps} does not divide "
                      f"the per-device batch {per_device} (config.batch_size="
                      f"{config.batch_size} over {num_devices} devices): use a divisor of "
                      f"{per_device}")
  # Run configs written before these fields existed have none.
  if not isinstance(config.get("fid_random_init", True), bool):
    raise ConfigError(f"config.fid_random_init={config.fid_random_init!r}: True or False")
  for field in ("cycle_x_weight", "cycle_z_weight"):
    weight = config.get(field, 0.0)
    if not check.is_number(weight) or weight < 0:
      raise ConfigError(f"config.{field}={weight!r}: must be >= 0 (0 leaves the term out)")
    if weight and config.encoder.kind == "none":
      raise ConfigError(f"config.{field}={weight!r}: the cycle terms need an encoder "
                        "(config.encoder.kind is 'none'); set it to 0")
  inception_batch = config.get("inception_batch_size", 0)
  if not check.is_integer(inception_batch) or inception_batch < 0 or inception_batch and (
      config.eval_batch_size % inception_batch or inception_batch % num_devices):
    raise ConfigError(f"config.inception_batch_size={inception_batch!r}: 0 (each evaluation "
                      "batch whole), or a divisor of "
                      f"config.eval_batch_size={config.eval_batch_size} that is a multiple of "
                      f"the {num_devices} devices")
  # Chunks slice the global batch on the host's side: one process only. The field is inert
  # where no Inception metric runs.
  if inception_batch and num_processes > 1 and {"fid", "is"} & set(config.eval_metrics):
    raise ConfigError(f"config.inception_batch_size={inception_batch}: Inception batches of "
                      f"their own are for a single process ({num_processes} run); set it to 0")
  truncations = config.get("fid_truncations", ())
  if not all(check.is_number(t) and t > 0 for t in truncations):
    raise ConfigError(f"config.fid_truncations={tuple(truncations)!r}: thresholds > 0 of the "
                      "truncation trick, e.g. (1.0, 0.5), or () for none")
  init_from = config.get("init_from", "")
  if not isinstance(init_from, str):
    raise ConfigError(f"config.init_from={init_from!r}: the path of a bundle "
                      "(python -m bigbigan.export), or '' for none")
  _validate_selection(config)


def _validate_selection(config: ml_collections.ConfigDict) -> None:
  """The best-checkpoint selection: a metric that the periodic evaluation computes."""
  metric = config.get("selection_metric", "")
  if not metric:
    return
  check.choice(config, "selection_mode", checkpointing.SELECTION_MODES)
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


def build_networks(config: ml_collections.ConfigDict) -> Networks:
  return build_biggan_networks(config)


def init_bigbigan_state(networks: Networks, optimizers: dict[str, optax.GradientTransformation],
                        rng: jax.Array, config: ml_collections.ConfigDict) -> TrainState:
  """Initialises G, E (if any) and D from `rng`; a pure function to jit with out_shardings."""
  g_rng, e_rng, d_rng, step_rng = jax.random.split(rng, 4)
  z = jnp.zeros((1, config.latent_dim), jnp.float32)
  side = config.resolution
  encoder = None
  d_inputs = (jnp.zeros((1, side, side, 3), jnp.float32),)
  if networks.encoder is not None:
    e_side = config.encoder.resolution
    encoder = init_network(networks.encoder, optimizers["encoder"], e_rng,
                           jnp.zeros((1, e_side, e_side, 3), jnp.float32))
    d_inputs += (z,)
  state = TrainState(
      step=jnp.zeros((), jnp.int32), rng=step_rng,
      generator=init_network(networks.generator, optimizers["generator"], g_rng, z),
      encoder=encoder,
      discriminator=init_network(networks.discriminator, optimizers["discriminator"], d_rng,
                                 *d_inputs))
  if config.ema_decay:
    state = state.replace(ema=averaged_params(state))
  if config.get("standing_stats_batches", 0):
    # Filled before every evaluation and checkpoint (standing_stats.py); present from the
    # start so that the state's structure, and so the compiled update, never changes.
    state = state.replace(standing_stats={
        name: getattr(state, name).batch_stats for name in averaged_params(state)})
  return state


def state_initializer(config: ml_collections.ConfigDict, networks: Networks
                      ) -> Callable[[jax.Array], TrainState]:
  """rng -> the config's initial TrainState, with its own optimizers (pure: jit it, or
  `jax.eval_shape` it for the state's shapes)."""
  return functools.partial(init_bigbigan_state, networks,
                           optimizers_lib.make_optimizers(config), config=config)


def make_update(config: ml_collections.ConfigDict, networks: Networks, mesh: Mesh,
                unroll_d_steps: Optional[bool] = None
                ) -> Callable[[TrainState, jax.Array], tuple[TrainState, dict]]:
  """The jitted BigBiGAN iteration with the config's optimizers (bigbigan_update.py; None
  leaves the D steps' loop to the mesh's platform)."""
  return make_bigbigan_train_step(config, networks, optimizers_lib.make_optimizers(config),
                                  mesh, unroll_d_steps)


def make_predict_fns(config: ml_collections.ConfigDict, networks: Networks, mesh: Mesh
                     ) -> PredictFns:
  return bigbigan_predict.make_predict_fns(config, networks, mesh)


def example_inputs(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
  """One example of each input of the network `name`, as abstract arrays."""
  # E has its own input resolution (BigBiGAN: 256 for E, 128 for G and D).
  side = config.encoder.resolution if name == "encoder" else config.resolution
  image = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
  z = jax.ShapeDtypeStruct((1, config.latent_dim), jnp.float32)
  labels = jax.ShapeDtypeStruct((1,), jnp.int32) if config.get("num_classes") else None
  if name == "generator":
    return {"z": z, "labels": labels} if labels is not None else {"z": z}
  if name == "encoder":
    return {"x": image}
  inputs = {"x": image}
  if config.encoder.kind != "none":  # D judges (x, z) pairs.
    inputs["z"] = z
  if labels is not None:
    inputs["labels"] = labels
  return inputs


def eval_metrics(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The evaluators (evaluation/registry.py) that the config may name."""
  del config  # Every BigBiGAN config may name them all.
  return EVAL_METRICS


def make_data(config: ml_collections.ConfigDict, mesh: Mesh):
  """The training images, their evaluation splits and the standing statistics' stream
  (bigbigan_data.ImageData)."""
  # Imported here: reading images takes TensorFlow, which loading a bundle, summarising a
  # config or timing the update (on accelerator machines without it) must not need.
  from bigbigan.families import bigbigan_data  # pylint: disable=g-import-not-at-top
  return bigbigan_data.ImageData(config, mesh)
