"""The training state: one `NetworkState` per network, the step and the base rng key."""

import dataclasses
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class NetworkState:
  """Everything one network carries between steps."""

  params: Any
  opt_state: optax.OptState
  batch_stats: Any  # Empty when the network has no BatchNorm.
  # Spectral norm's power-iteration vectors (models/layers.py); empty without spectral norm.
  spectral: Any = dataclasses.field(default_factory=dict)


@flax.struct.dataclass
class TrainState:
  """The whole run's state; a pytree that is jitted, donated and checkpointed as one."""

  step: jax.Array
  rng: jax.Array  # Base key; each step derives its own with fold_in(rng, step).
  generator: NetworkState
  encoder: Optional[NetworkState]  # None for the plain GAN baseline.
  discriminator: NetworkState
  # Exponential moving averages of G's and E's params ({"generator", "encoder"}), used for
  # evaluation and sampling; None when config.ema_decay is 0.
  ema: Optional[dict] = None
  # BigGAN's "standing statistics": BatchNorm statistics of the networks that inference runs
  # (the EMA params when kept), {"generator", "encoder"} like `ema`, recomputed by
  # standing_stats.py before each evaluation and checkpoint. The live networks' running
  # averages belong to the live params, which the EMA trails. None: inference uses those.
  standing_stats: Optional[dict] = None


def init_network(module, tx: optax.GradientTransformation, rng: jax.Array,
                 *inputs) -> NetworkState:
  """A network's params (initialised on `inputs`), optimizer state and BN/SN state."""
  param_rng, latent_rng = jax.random.split(rng)
  variables = module.init({"params": param_rng, "latent": latent_rng}, *inputs, train=False)
  params = variables["params"]
  return NetworkState(params=params, opt_state=tx.init(params),
                      batch_stats=variables.get("batch_stats", {}),
                      spectral=variables.get("spectral", {}))


def averaged_params(state: TrainState) -> dict:
  """The params that an EMA follows: G's, and E's if there is an encoder."""
  params = {"generator": state.generator.params}
  if state.encoder is not None:
    params["encoder"] = state.encoder.params
  return params


def update_ema(state: TrainState, decay: float, start_step: int = 0) -> TrainState:
  """ema <- decay * ema + (1 - decay) * params, for a state that keeps an EMA.

  Until `state.step` reaches `start_step` the EMA equals the params, so that it never
  averages in the random initialisation of an early, fast-moving phase of training.
  """
  if state.ema is None:
    return state
  decay = jnp.where(state.step > start_step, decay, 0.0)
  ema = jax.tree.map(lambda average, new: decay * average + (1.0 - decay) * new, state.ema,
                     averaged_params(state))
  return state.replace(ema=ema)


def inference_params(state: TrainState, network: str):
  """The params that evaluation and sampling use: the EMA's if kept, else the live ones."""
  if state.ema is not None:
    return state.ema[network]
  return getattr(state, network).params


def inference_batch_stats(state: TrainState, network: str):
  """The BatchNorm statistics that evaluation and sampling use with `inference_params`: the
  standing statistics if the state keeps them, else the live network's running averages."""
  if state.standing_stats is not None and network in state.standing_stats:
    return state.standing_stats[network]
  return getattr(state, network).batch_stats
