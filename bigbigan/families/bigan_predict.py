"""The MLP family's predict functions: evaluation-mode G, E and D of a state, as its
evaluators (mode coverage on the mixture, representations of MNIST) run them.

BatchNorm runs on the live networks' running statistics; G and E use their EMA params when
the state keeps them (`state.inference_params`).
"""

from typing import Callable, Optional

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from bigbigan import sharding
from bigbigan.families.bigan_update import network_variables
from bigbigan.families.common import PredictFns, sample_prior
from bigbigan.models.networks import Networks
from bigbigan.state import NetworkState, TrainState, inference_params


def _apply(module, network: NetworkState, params, *inputs, rngs=None, mutable=False):
  """An evaluation-mode forward with `params` and the network's BN running statistics."""
  return module.apply(network_variables(network, params), *inputs, train=False, rngs=rngs,
                      mutable=mutable)


def make_predict_fns(config: ml_collections.ConfigDict, networks: Networks, mesh: Mesh,
                     normalise, discriminator_features: bool = False) -> PredictFns:
  """Jitted inference, inputs sharded on `data`; `normalise` maps the batches as the data
  pipeline ships them to the networks' input.

  Returns PredictFns with `generate`: (state, z) -> G(z) (z with the one-hot label appended
  for a conditional G); with an encoder, `encode`: (state, x, rng) -> (z, z_mean); and, if
  there are features to evaluate, `features`: (state, x) -> {name: [B, D]} with "z_mean"
  (E(x)'s mean), "penultimate" (E's last hidden layer) and, for an encoder with a bounding
  output activation, "z_logits" (the mean before it) from an encoder and, with
  `discriminator_features` (a D that judges x alone), "discriminator" (D's last hidden
  layer: the BiGAN paper's "D" baseline).
  """
  # The state comes in its own layout (in_shardings None): the training state's
  # (sharding.state_shardings, whose EMA each program gathers) or a loaded bundle's.
  replicated, batch = sharding.replicated(mesh), sharding.batch_sharded(mesh)

  def ema(state: TrainState, name: str):
    return sharding.gathered(inference_params(state, name), mesh)

  def generate(state: TrainState, z: jax.Array) -> jax.Array:
    return _apply(networks.generator, state.generator, ema(state, "generator"), z)

  encode: Optional[Callable] = None
  if networks.encoder is not None:
    def encode_data(state: TrainState, x: jax.Array, rng: jax.Array):
      return _apply(networks.encoder, state.encoder, ema(state, "encoder"), x,
                    rngs={"latent": rng})
    encode = jax.jit(encode_data, in_shardings=(None, batch, replicated),
                     out_shardings=batch)

  def sown_features(module, network: NetworkState, params, x: jax.Array):
    # Encoder means need no noise: a fixed key keeps this a pure function of x.
    return _apply(module, network, params, x, rngs={"latent": jax.random.PRNGKey(0)},
                  mutable=["intermediates"])

  def features(state: TrainState, x: jax.Array) -> dict[str, jax.Array]:
    found = {}
    if networks.encoder is not None:
      (_, z_mean), sown = sown_features(networks.encoder, state.encoder,
                                        ema(state, "encoder"), x)
      found.update(z_mean=z_mean, penultimate=sown["intermediates"]["features"][0])
      if "logits" in sown["intermediates"]:
        found["z_logits"] = sown["intermediates"]["logits"][0]
    if discriminator_features:
      _, sown = sown_features(networks.discriminator, state.discriminator,
                              state.discriminator.params, x)
      found["discriminator"] = sown["intermediates"]["features"][0]
    return found

  def sample_latents(key: jax.Array, n: int, truncation: Optional[float] = None
                     ) -> np.ndarray:
    return np.asarray(sample_prior(key, (n, config.latent_dim), config.latent_prior,
                                   truncation))

  has_features = networks.encoder is not None or discriminator_features
  return PredictFns(
      generate=jax.jit(generate, in_shardings=(None, batch), out_shardings=batch),
      sample_latents=sample_latents, normalise=jax.jit(normalise), encode=encode,
      features=(jax.jit(features, in_shardings=(None, batch), out_shardings=batch)
                if has_features else None))
