"""The (G, E, D) triple of Flax modules, built from a config: one builder per family."""

from typing import NamedTuple, Optional

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from bigbigan.errors import ConfigError
from bigbigan.models import biggan
from bigbigan.models import discriminator as discriminator_lib
from bigbigan.models import encoder as encoder_lib
from bigbigan.models import layers
from bigbigan.models import mlp
from bigbigan.models import resnet

COMPUTE_DTYPES = ("float32", "bfloat16")
ENCODER_KINDS = ("deterministic", "stochastic", "none")


class Networks(NamedTuple):
  generator: nn.Module
  encoder: Optional[nn.Module]  # None: the plain GAN baseline, no encoder.
  discriminator: nn.Module


def build_mlp_networks(config: ml_collections.ConfigDict, data_dim: int) -> Networks:
  """The MLP family's modules, on data of `data_dim` features."""
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


def build_biggan_networks(config: ml_collections.ConfigDict) -> Networks:
  """BigGAN's G and BigBiGAN's D at `config.resolution`, and an image encoder (or none)."""
  if config.compute_dtype not in COMPUTE_DTYPES:
    raise ConfigError(f"config.compute_dtype={config.compute_dtype!r}: allowed "
                      f"{COMPUTE_DTYPES}")
  if config.resolution not in biggan.GENERATOR_WIDTHS:
    raise ConfigError(f"config.resolution={config.resolution!r}: allowed "
                      f"{tuple(biggan.GENERATOR_WIDTHS)}")
  chunks = biggan.latent_chunks(config.resolution)
  if config.latent_dim % chunks:
    raise ConfigError(f"config.latent_dim={config.latent_dim}: BigGAN at {config.resolution} "
                      f"pixels splits z into {chunks} equal chunks; use a multiple of {chunks}")
  # Configs written before the field existed (a bundle's bundle.json) store nothing.
  remat = config.get("remat", "none")
  if remat not in layers.REMAT_POLICIES:
    raise ConfigError(f"config.remat={remat!r}: allowed {layers.REMAT_POLICIES}")
  dtype = jnp.dtype(config.compute_dtype)
  g, e, d = config.generator, config.encoder, config.discriminator
  encoder = None
  if e.kind != "none":
    if e.backbone not in encoder_lib.BACKBONES:
      raise ConfigError(f"config.encoder.backbone={e.backbone!r}: allowed "
                        f"{encoder_lib.BACKBONES}")
    if e.depth not in resnet.STAGE_UNITS:
      raise ConfigError(f"config.encoder.depth={e.depth!r}: allowed "
                        f"{tuple(resnet.STAGE_UNITS)}")
    if e.latent_bound not in encoder_lib.LATENT_BOUNDS:
      raise ConfigError(f"config.encoder.latent_bound={e.latent_bound!r}: allowed "
                        f"{encoder_lib.LATENT_BOUNDS}")
    encoder = encoder_lib.ImageEncoder(
        latent_dim=config.latent_dim, backbone=e.backbone, depth=e.depth, width=e.width,
        base_width=e.base_width, reversible=e.reversible, head_width=e.head_width,
        head_depth=e.head_depth,
        stochastic=e.kind == "stochastic", latent_bound=e.latent_bound, dtype=dtype)
  generator = biggan.BigGANGenerator(resolution=config.resolution, ch=g.ch,
                                     num_classes=config.num_classes,
                                     shared_dim=g.shared_dim, dtype=dtype, remat=remat)
  discriminator = discriminator_lib.BigBiGANDiscriminator(
      resolution=config.resolution, ch=d.ch, latent_width=d.latent_width,
      latent_depth=d.latent_depth, joint_width=d.joint_width, joint_depth=d.joint_depth,
      unary_x=d.unary_x, unary_z=d.unary_z, num_classes=config.num_classes, dtype=dtype,
      remat=remat)
  return Networks(generator, encoder, discriminator)
