"""The MLP family (`config.network="mlp"`): BiGAN, ALI, the GAN baseline, latent
regressors and an autoencoder, with MLP networks, on the 2-D Gaussian mixture
(configs/mixture.py) or flattened MNIST (configs/mnist_bigan.py).

What the trainer's tools take from a family (families/__init__.py): the config's checks,
the networks, the initial state, the update (bigan_update.py), the training data
(bigan_data.py), and the predict functions (bigan_predict.py).
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from bigbigan import config_validation as check
from bigbigan import losses
from bigbigan import optimizers as optimizers_lib
from bigbigan.data import mnist
from bigbigan.errors import ConfigError
from bigbigan.families import bigan_predict
from bigbigan.families.bigan_update import (OBJECTIVES, UPDATE_MODES, joint_discriminator,
                                            make_train_step)
from bigbigan.families.common import PRIORS, PredictFns
from bigbigan.models import mlp
from bigbigan.models.networks import ENCODER_KINDS, Networks, build_mlp_networks
from bigbigan.state import TrainState, averaged_params, init_network

# Each dataset's input size, and the evaluators (evaluation/registry.py) its runs may name in
# `config.eval_metrics`.
DATA_DIMS = {"mixture": 2, "mnist": mnist.MNIST_PIXELS}
DATASET_EVAL_METRICS = {"mixture": ("mode_coverage",), "mnist": ("mnist_representation",)}
NETWORK_NAMES = ("generator", "encoder", "discriminator")
# The fields each dataset adds: (positive integers, non-negative integers, positive numbers).
DATASET_FIELDS = {
    "mixture": (("eval_samples", "mixture.modes_per_axis", "mixture.num_train",
                 "mixture.num_eval"), ("mixture.data_seed",), ("mixture.std", "mixture.spacing")),
    "mnist": (("eval_batch_size",), (), ()),
}


def validate_networks(config: ml_collections.ConfigDict) -> None:
  """The fields that shape the networks: what the tools that build them without training
  (bigbigan.benchmark, bigbigan.summary) need of a config."""
  check.choice(config, "dataset", tuple(DATA_DIMS))  # Sets the input size.
  check.check_numbers(config, ("latent_dim",), (), (), ())
  check.choice(config, "latent_prior", PRIORS)
  check.choice(config, "encoder.kind", ENCODER_KINDS)
  for network in NETWORK_NAMES:
    sizes = check.get(config, f"{network}.hidden_sizes")
    if (not isinstance(sizes, (tuple, list)) or not sizes or
        not all(check.is_integer(s) and s > 0 for s in sizes)):
      raise ConfigError(f"config.{network}.hidden_sizes={sizes!r}: must be a non-empty "
                        "tuple of positive integers, e.g. (128, 128)")
    check.choice(config, f"{network}.activation", mlp.ACTIVATIONS)
  for network in ("generator", "encoder"):
    check.choice(config, f"{network}.output_activation", mlp.OUTPUT_ACTIVATIONS)


def validate_config(config: ml_collections.ConfigDict, num_devices: int,
                    num_processes: int) -> None:
  """The fields of an MLP config (configs/mixture.py, configs/mnist_bigan.py)."""
  check.choice(config, "dataset", tuple(DATA_DIMS))
  positive_integers, non_negative_integers, positive_numbers = DATASET_FIELDS[config.dataset]
  check.check_numbers(config, check.POSITIVE_INTEGERS + positive_integers,
                      check.NON_NEGATIVE_INTEGERS + non_negative_integers,
                      check.POSITIVE_NUMBERS + positive_numbers, tuple(check.RANGES))
  validate_networks(config)

  check.divides(config, "batch_size", num_devices, "devices")
  check.divides(config, "batch_size", num_processes, "processes")
  if config.get("accumulation_steps", 1) != 1:
    raise ConfigError(f"config.accumulation_steps={config.accumulation_steps!r}: gradient "
                      "accumulation is BigBiGAN's (network='biggan'); set it to 1 here")
  if config.dataset == "mixture" and config.mixture.num_train < config.batch_size:
    raise ConfigError(f"config.mixture.num_train={config.mixture.num_train} is smaller than "
                      f"config.batch_size={config.batch_size}: raise it or lower the batch")
  if config.dataset == "mnist":
    check.divides(config, "eval_batch_size", num_devices, "devices")
    check.divides(config, "eval_batch_size", num_processes, "processes")
    seed = config.pixel_permutation_seed
    if seed is not None and (not check.is_integer(seed) or seed < 0):
      raise ConfigError(f"config.pixel_permutation_seed={seed!r}: must be None (no "
                        "permutation) or an integer >= 0")
  check.eval_metrics(config, eval_metrics(config))

  check.choice(config, "objective", OBJECTIVES)
  if config.objective == "autoencoder":
    check.choice(config, "reconstruction_loss", losses.RECONSTRUCTION_LOSSES)
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
  check.choice(config, "loss", losses.LOSS_KINDS)
  check.choice(config, "update_mode", UPDATE_MODES)


def eval_metrics(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The evaluators (evaluation/registry.py) that the config may name: its dataset's."""
  return DATASET_EVAL_METRICS[config.dataset]


def build_networks(config: ml_collections.ConfigDict) -> Networks:
  return build_mlp_networks(config, DATA_DIMS[config.dataset])


def num_classes(config: ml_collections.ConfigDict) -> int:
  """> 0: a conditional model, whose G and D also take the one-hot label."""
  return mnist.MNIST_CLASSES if config.get("conditional") else 0


def init_train_state(networks: Networks, optimizers: dict[str, optax.GradientTransformation],
                     rng: jax.Array, data_dim: int, latent_dim: int, joint: bool = True,
                     num_classes: int = 0, ema: bool = False) -> TrainState:
  """Initialises every network from `rng` (a pure function: jit it with output shardings).

  `joint`: D sees (x, z) pairs if the model has an encoder (BiGAN/ALI), else x alone.
  `num_classes` > 0: a conditional model, whose G and D also take the one-hot label.
  `ema`: keep moving averages of G's and E's params, starting from their initial values.
  """
  g_rng, e_rng, d_rng, step_rng = jax.random.split(rng, 4)
  x = jnp.zeros((1, data_dim), jnp.float32)
  encoder = None
  if networks.encoder is not None:
    encoder = init_network(networks.encoder, optimizers["encoder"], e_rng, x)
  side_dim = latent_dim * (joint and networks.encoder is not None) + num_classes
  d_inputs = (x,) if not side_dim else (x, jnp.zeros((1, side_dim), jnp.float32))
  g_input = jnp.zeros((1, latent_dim + num_classes), jnp.float32)
  state = TrainState(
      step=jnp.zeros((), jnp.int32),
      rng=step_rng,
      generator=init_network(networks.generator, optimizers["generator"], g_rng, g_input),
      encoder=encoder,
      discriminator=init_network(networks.discriminator, optimizers["discriminator"], d_rng,
                                 *d_inputs),
  )
  return state.replace(ema=averaged_params(state)) if ema else state


def state_initializer(config: ml_collections.ConfigDict, networks: Networks
                      ) -> Callable[[jax.Array], TrainState]:
  """rng -> the config's initial TrainState, with its own optimizers (pure: jit it, or
  `jax.eval_shape` it for the state's shapes)."""
  return functools.partial(
      init_train_state, networks, optimizers_lib.make_optimizers(config),
      data_dim=DATA_DIMS[config.dataset], latent_dim=config.latent_dim,
      joint=joint_discriminator(config, networks), num_classes=num_classes(config),
      ema=config.ema_decay > 0)


def _normalise(config: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array]:
  """The data as shipped -> the networks' input: MNIST's uint8 pixels to [-1, 1]."""
  return mnist.normalise_pixels if config.dataset == "mnist" else (lambda x: x)


def make_update(config: ml_collections.ConfigDict, networks: Networks, mesh: Mesh
                ) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
  """The jitted update with the config's optimizers (bigan_update.py)."""
  return make_train_step(config, networks, optimizers_lib.make_optimizers(config), mesh,
                         _normalise(config), num_classes(config))


def make_predict_fns(config: ml_collections.ConfigDict, networks: Networks, mesh: Mesh
                     ) -> PredictFns:
  # D's features are a representation of x when D judges x alone (and needs no label).
  d_features = not joint_discriminator(config, networks) and not num_classes(config)
  return bigan_predict.make_predict_fns(config, networks, mesh, _normalise(config),
                                        discriminator_features=d_features)


def example_inputs(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
  """One example of each input of the network `name`, as abstract arrays."""
  x = jax.ShapeDtypeStruct((1, DATA_DIMS[config.dataset]), jnp.float32)
  classes = num_classes(config)
  if name == "generator":
    return {"z": jax.ShapeDtypeStruct((1, config.latent_dim + classes), jnp.float32)}
  if name == "encoder":
    return {"x": x}
  # D's side input: E(x) or z for a joint D, and a conditional model's one-hot label.
  side = config.latent_dim * joint_discriminator(config, build_networks(config)) + classes
  if not side:
    return {"x": x}
  return {"x": x, "z": jax.ShapeDtypeStruct((1, side), jnp.float32)}


def make_data(config: ml_collections.ConfigDict, mesh: Mesh):
  """The training data of `config.dataset` (bigan_data.py: MixtureData or MnistData)."""
  del mesh  # Batches are this process's host arrays; the trainer places them.
  # Imported here: reading MNIST takes TensorFlow, which the update and predict functions
  # (and the tools that use only those) must not need.
  from bigbigan.families import bigan_data  # pylint: disable=g-import-not-at-top
  if config.dataset == "mixture":
    return bigan_data.MixtureData(config)
  return bigan_data.MnistData(config, num_classes(config))
