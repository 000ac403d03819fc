"""The training state: one `NetworkState` per network, the step and the base rng key."""

from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from bigbigan.models.networks import Networks


@flax.struct.dataclass
class NetworkState:
  """Everything one network carries between steps."""

  params: Any
  opt_state: optax.OptState
  batch_stats: Any  # Empty when the network has no BatchNorm.


@flax.struct.dataclass
class TrainState:
  """The whole run's state; a pytree that is jitted, donated and checkpointed as one."""

  step: jax.Array
  rng: jax.Array  # Base key; each step derives its own with fold_in(rng, step).
  generator: NetworkState
  encoder: Optional[NetworkState]  # None for the plain GAN baseline.
  discriminator: NetworkState


def _init_network(module, tx: optax.GradientTransformation, rng: jax.Array,
                  *inputs) -> NetworkState:
  param_rng, latent_rng = jax.random.split(rng)
  variables = module.init({"params": param_rng, "latent": latent_rng}, *inputs, train=False)
  params = variables["params"]
  return NetworkState(params=params, opt_state=tx.init(params),
                      batch_stats=variables.get("batch_stats", {}))


def init_train_state(networks: Networks, optimizers: dict[str, optax.GradientTransformation],
                     rng: jax.Array, data_dim: int, latent_dim: int, joint: bool = True,
                     num_classes: int = 0) -> TrainState:
  """Initialises every network from `rng` (a pure function: jit it with output shardings).

  `joint`: D sees (x, z) pairs if the model has an encoder (BiGAN/ALI), else x alone.
  `num_classes` > 0: a conditional model, whose G and D also take the one-hot label.
  """
  g_rng, e_rng, d_rng, step_rng = jax.random.split(rng, 4)
  x = jnp.zeros((1, data_dim), jnp.float32)
  encoder = None
  if networks.encoder is not None:
    encoder = _init_network(networks.encoder, optimizers["encoder"], e_rng, x)
  side_dim = latent_dim * (joint and networks.encoder is not None) + num_classes
  d_inputs = (x,) if not side_dim else (x, jnp.zeros((1, side_dim), jnp.float32))
  g_input = jnp.zeros((1, latent_dim + num_classes), jnp.float32)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      rng=step_rng,
      generator=_init_network(networks.generator, optimizers["generator"], g_rng, g_input),
      encoder=encoder,
      discriminator=_init_network(networks.discriminator, optimizers["discriminator"], d_rng,
                                  *d_inputs),
  )
