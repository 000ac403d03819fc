"""BigBiGAN's predict functions: evaluation-mode G, E and D of a state, as evaluation,
`bigbigan.evaluate` and `bigbigan.load` run them.

    predict = make_predict_fns(config, networks, mesh)
    outputs = predict.encode(state, images)        # z_mean, z_sample, avepool_feat, ...
    images = predict.generate(state, predict.sample_latents(key, 16))

G and E run with their EMA params and the standing BatchNorm statistics of those
(standing_stats.py) when the state keeps them; D with its live params. E's noise is a
function of each image's pixels (`per_image_noise`), so an image encodes the same in any
batch; images of any size are framed and resized to E's or D's resolution as the input
pipeline's evaluation preprocessing does (`fit_resolution`).
"""

from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from bigbigan import sharding
from bigbigan.families.bigbigan_update import network_variables
from bigbigan.families.common import (PredictFns, normalise_images, sample_prior,
                                      to_discriminator_resolution)
from bigbigan.models.networks import Networks
from bigbigan.state import TrainState, inference_batch_stats, inference_params


def per_image_noise(x: jax.Array, latent_dim: int, seed: jax.Array) -> jax.Array:
  """eps ~ N(0, I) [N, latent_dim], a function of each image's 8-bit pixel values and `seed`.

  Each image's key folds a 32-bit hash of its pixels, quantised to the 256 levels of uint8
  images, into PRNGKey(seed): an image gets the same z_sample in any batch and whether it
  came as uint8 or float (rounding differences of 1e-7 cannot move a level). The hash is a
  position-weighted sum in uint32 arithmetic (exact whatever the reduction's order), mixed
  by MurmurHash3's finaliser.
  """
  levels = jnp.round((jnp.clip(x.astype(jnp.float32), -1.0, 1.0) + 1.0) * 127.5)
  pixels = levels.astype(jnp.uint32).reshape(len(x), -1)
  weights = jnp.arange(pixels.shape[1], dtype=jnp.uint32) * jnp.uint32(0x9E3779B1) | 1
  h = jnp.sum(pixels * weights, axis=1, dtype=jnp.uint32)
  h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
  h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
  h = h ^ (h >> 16)
  base = jax.random.PRNGKey(seed)
  return jax.vmap(lambda data: jax.random.normal(jax.random.fold_in(base, data),
                                                 (latent_dim,)))(h)


def central_square(x: jax.Array) -> jax.Array:
  """The central square of images [N, H, W, C] (data/images.py's evaluation framing)."""
  height, width = x.shape[1:3]
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  return x[:, top:top + side, left:left + side]


def fit_resolution(x: jax.Array, resolution: int, pool: bool = False) -> jax.Array:
  """Images [N, H, W, 3] in [-1, 1] at `resolution` pixels: unchanged if they are, 2x2-
  average-pooled as training feeds D from E's images (`pool`, when the sides differ by a
  power of two), else framed and resized as the input pipeline's evaluation preprocessing
  does: the central square of a non-square image, resized (bicubic, antialiased), then
  rounded to the 256 levels of its uint8 output and clipped to [-1, 1]."""
  side = x.shape[1]
  if x.shape[1:3] == (resolution, resolution):
    return x
  ratio = side // resolution
  if pool and x.shape[2] == side and side % resolution == 0 and ratio & (ratio - 1) == 0:
    return to_discriminator_resolution(x, resolution)
  x = central_square(x)
  resized = jax.image.resize(x, (len(x), resolution, resolution, x.shape[3]), "bicubic",
                             antialias=True)
  levels = jnp.clip(jnp.round((resized + 1.0) * 127.5), 0.0, 255.0)
  return levels / 127.5 - 1.0


def make_predict_fns(config: ml_collections.ConfigDict, networks: Networks, mesh: Mesh
                     ) -> PredictFns:
  """Jitted evaluation-mode G, E and D: EMA params of G and E if the state keeps them, with
  their standing BatchNorm statistics if it keeps those (`state.inference_batch_stats`), D's
  live params; spectral norm on its stored vectors; inputs and outputs sharded on `data`.

  Returns PredictFns with `generate`: (state, z) -> G(z) in [-1, 1], float32;
  `discriminate`: (state, x in [-1, 1] at G's resolution, z) -> D's scores {"x", "z", "xz"};
  `normalise`: uint8 -> [-1, 1]; `sample_latents`: (key, n) -> z from the config's prior;
  and, with an encoder, `encode`: (state, x in [-1, 1], seed=0) -> E's outputs (z_mean,
  z_sample, avepool_feat, bn_crelu_feat). E's noise is `per_image_noise` of x as given, so
  `encode` is a function of each image (and the seed) alone. Images of another size are
  brought to E's resolution, or to G's for D, by `fit_resolution`.
  """
  # The state comes in its own layout (in_shardings None): the training state's
  # (sharding.state_shardings, whose EMA each program gathers) or a loaded bundle's.
  replicated, batch = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  resolution, encoder_resolution = config.resolution, config.encoder.resolution

  def apply(name: str, state: TrainState, *inputs, **kwargs):
    network = getattr(state, name)
    module = getattr(networks, name)
    if name == "discriminator":
      variables = network_variables(network, network.params)
    else:  # The EMA params with their own (standing) BatchNorm statistics.
      with_standing = network.replace(batch_stats=inference_batch_stats(state, name))
      variables = network_variables(with_standing,
                                    sharding.gathered(inference_params(state, name), mesh))
    return module.apply(variables, *inputs, train=False, **kwargs)

  def generate(state: TrainState, z: jax.Array) -> jax.Array:
    return apply("generator", state, z).astype(jnp.float32)

  def encode_images(state: TrainState, x: jax.Array, seed: jax.Array) -> dict[str, jax.Array]:
    noise = per_image_noise(x, networks.encoder.latent_dim, seed)
    x = fit_resolution(x, encoder_resolution)
    outputs = apply("encoder", state, x, noise=noise)
    return jax.tree.map(lambda v: v.astype(jnp.float32), outputs)

  def discriminate(state: TrainState, x: jax.Array, z: jax.Array) -> dict[str, jax.Array]:
    return apply("discriminator", state, fit_resolution(x, resolution, pool=True), z)

  def sample_latents(key: jax.Array, n: int, truncation: Optional[float] = None
                     ) -> np.ndarray:
    return np.asarray(sample_prior(key, (n, config.latent_dim), config.latent_prior,
                                   truncation))

  encode = None
  if networks.encoder is not None:
    jitted = jax.jit(encode_images, in_shardings=(None, batch, replicated),
                     out_shardings=batch)
    encode = lambda state, x, seed=0: jitted(state, x, jnp.uint32(seed))
  return PredictFns(
      generate=jax.jit(generate, in_shardings=(None, batch), out_shardings=batch),
      sample_latents=sample_latents, normalise=jax.jit(normalise_images), encode=encode,
      discriminate=jax.jit(discriminate, in_shardings=(None, batch, batch),
                           out_shardings=batch))
