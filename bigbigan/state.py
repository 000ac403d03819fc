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
                     rng: jax.Array, data_dim: int, latent_dim: int) -> TrainState:
  """Initialises every network from `rng` (a pure function: jit it with output shardings)."""
  g_rng, e_rng, d_rng, step_rng = jax.random.split(rng, 4)
  x = jnp.zeros((1, data_dim), jnp.float32)
  z = jnp.zeros((1, latent_dim), jnp.float32)
  encoder = None
  if networks.encoder is not None:
    encoder = _init_network(networks.encoder, optimizers["encoder"], e_rng, x)
  d_inputs = (x,) if networks.encoder is None else (x, z)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      rng=step_rng,
      generator=_init_network(networks.generator, optimizers["generator"], g_rng, z),
      encoder=encoder,
      discriminator=_init_network(networks.discriminator, optimizers["discriminator"], d_rng,
                                  *d_inputs),
  )
