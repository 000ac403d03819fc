"""Builds the (G, E, D) triple of Flax modules that a config names."""

from typing import NamedTuple, Optional

import flax.linen as nn
import ml_collections

from bigbigan.errors import ConfigError
from bigbigan.models import mlp

NETWORK_KINDS = ("mlp",)
ENCODER_KINDS = ("deterministic", "stochastic", "none")


class Networks(NamedTuple):
  generator: nn.Module
  encoder: Optional[nn.Module]  # None: the plain GAN baseline, no encoder.
  discriminator: nn.Module


def build_networks(config: ml_collections.ConfigDict, data_dim: int) -> Networks:
  """Returns the modules for `config.network` on data of `data_dim` features."""
  if config.network != "mlp":
    raise ConfigError(f"config.network={config.network!r}: allowed {NETWORK_KINDS}")
  g, e, d = config.generator, config.encoder, config.discriminator
  generator = mlp.MLPGenerator(
      output_size=data_dim, hidden_sizes=tuple(g.hidden_sizes), activation=g.activation,
      batch_norm=g.batch_norm, output_activation=g.output_activation)
  encoder = None
  if e.kind != "none":
    encoder = mlp.MLPEncoder(
        latent_dim=config.latent_dim, hidden_sizes=tuple(e.hidden_sizes),
        activation=e.activation, batch_norm=e.batch_norm, stochastic=e.kind == "stochastic",
        output_activation=e.output_activation)
  discriminator = mlp.MLPDiscriminator(
      hidden_sizes=tuple(d.hidden_sizes), activation=d.activation, batch_norm=d.batch_norm)
  return Networks(generator, encoder, discriminator)
