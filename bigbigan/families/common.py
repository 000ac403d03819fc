"""What the model families and their evaluators share: the prior, image conversions on the
devices, and the shape of a family's predict functions.

A leaf of the package: evaluators import it for these, never a family's update module.
"""

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from bigbigan.errors import ConfigError

PRIORS = ("normal", "uniform")


def sample_prior(rng: jax.Array, shape: tuple[int, ...], prior: str,
                 truncation: Optional[float] = None) -> jax.Array:
  """z ~ N(0, I) ("normal") or U(-1, 1) ("uniform").

  With `truncation` t, BigGAN's truncation trick: the prior conditioned on |z_i| <= t
  (values outside are resampled, not clipped), which trades variety for fidelity: a
  truncated normal, or U(-t, t) for the uniform prior, whose samples for t >= 1 are the
  untruncated ones (the same draws of the same key).
  """
  if truncation is not None and not truncation > 0:
    raise ValueError(f"truncation={truncation!r}: must be a threshold > 0 (None: none)")
  if prior == "normal":
    if truncation is None:
      return jax.random.normal(rng, shape)
    return jax.random.truncated_normal(rng, -truncation, truncation, shape)
  if prior == "uniform":
    bound = 1.0 if truncation is None else min(float(truncation), 1.0)
    return jax.random.uniform(rng, shape, minval=-bound, maxval=bound)
  raise ConfigError(f"config.latent_prior={prior!r}: allowed {PRIORS}")


def normalise_images(images: jax.Array, dtype=jnp.float32) -> jax.Array:
  """uint8 [0, 255] -> [-1, 1] (the range of G's tanh output) in `dtype`."""
  return images.astype(dtype) / 127.5 - 1.0


def interleave_pairs(a: jax.Array, b: jax.Array) -> jax.Array:
  """Two batches row by row, [a0, b0, a1, b1, ...]: one discriminator batch of real and fake
  pairs. Unlike concatenation along the batch axis, which the `data` axis splits over the
  devices (all-to-alls and collective-permutes to move rows), it keeps each device's rows of
  `a` and `b` on that device."""
  return jnp.stack([a, b], axis=1).reshape((-1,) + a.shape[1:])


def split_pairs(scores: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The inverse of `interleave_pairs` for D's scores [2N]: (a's [N], b's [N])."""
  pairs = scores.reshape((-1, 2) + scores.shape[1:])
  return pairs[:, 0], pairs[:, 1]


def to_discriminator_resolution(x: jax.Array, resolution: int) -> jax.Array:
  """E's images at D's (and G's) resolution: 2x2 average pooling until they match."""
  while x.shape[1] > resolution:
    x = jax.lax.reduce_window(x, jnp.zeros((), x.dtype), jax.lax.add, (1, 2, 2, 1),
                              (1, 2, 2, 1), "VALID") / 4.0
  return x


def upsample_to(x: jax.Array, resolution: int) -> jax.Array:
  """D's (and G's) images at E's resolution: each pixel repeated 2x2 until they match, so
  that to_discriminator_resolution gives `x` back exactly."""
  while x.shape[1] < resolution:
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  return x


@dataclasses.dataclass(frozen=True)
class PredictFns:
  """A family's evaluation-mode functions of a state, jitted over the mesh, built once by
  whoever owns the state (the trainer, `bigbigan.evaluate`, `bigbigan.load`) and handed to
  the evaluators. Inputs and outputs are sharded on the mesh's `data` axis.

  Every family has `generate`, `sample_latents` and `normalise`; the others are None where
  the model lacks the network or the family the output.
  """

  # (state, z) -> G(z): the EMA generator when the state keeps one.
  generate: Callable[..., jax.Array]
  # (key, n, truncation=None) -> n latents from the config's prior (truncated at the
  # threshold: `sample_prior`), host numpy (what `generate` takes, less a conditional
  # model's label).
  sample_latents: Callable[..., Any]
  # The data as the pipeline ships it (e.g. uint8 pixels) -> the networks' input range.
  normalise: Callable[[jax.Array], jax.Array]
  # (state, x, ...) -> E's outputs; the family documents its keys and extra arguments.
  encode: Optional[Callable[..., Any]] = None
  # (state, x, z) -> D's scores {"x", "z", "xz"} (BigBiGAN).
  discriminate: Optional[Callable[..., Any]] = None
  # (state, x) -> {name: [B, D]} representations to evaluate (the MLP family).
  features: Optional[Callable[..., Any]] = None
