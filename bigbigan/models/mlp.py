"""Fully connected G, E and D: the networks of the ALI mixture and BiGAN MNIST experiments.

Every hidden layer is Dense -> (optional parameter-free BatchNorm) -> non-linearity. As in the
BiGAN paper (appendix C.1), BatchNorm, when enabled, is applied to every hidden layer but the
first, and the discriminator sees z through a learned linear map added to the pre-activation
of each of its layers, so the joint score is not limited to features of x alone.
"""

from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "leaky_relu": lambda x: nn.leaky_relu(x, negative_slope=0.2),
    "elu": nn.elu,
    "tanh": jnp.tanh,
}
OUTPUT_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "linear": lambda x: x,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
}


class _HiddenStack(nn.Module):
  """Dense hidden layers; `side_input`, if given, is linearly mapped into every layer."""

  hidden_sizes: Sequence[int]
  activation: str
  batch_norm: bool

  @nn.compact
  def __call__(self, x, side_input=None, *, train: bool):
    act = ACTIVATIONS[self.activation]
    for i, width in enumerate(self.hidden_sizes):
      normalised = self.batch_norm and i > 0
      # BatchNorm subtracts the batch mean, so a bias before it would have no effect (and
      # Adam would turn its round-off gradients into lr-sized random updates).
      h = nn.Dense(width, use_bias=not normalised, name=f"dense_{i}")(x)
      if side_input is not None:
        h = h + nn.Dense(width, use_bias=False, name=f"side_{i}")(side_input)
      if normalised:
        # Parameter-free BN: the paper normalises without a learned scale or offset.
        h = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False,
                         momentum=0.9, name=f"bn_{i}")(h)
      x = act(h)
    return x


class MLPGenerator(nn.Module):
  """G: z -> x."""

  output_size: int
  hidden_sizes: Sequence[int]
  activation: str = "relu"
  batch_norm: bool = False
  output_activation: str = "linear"

  @nn.compact
  def __call__(self, z, *, train: bool):
    h = _HiddenStack(self.hidden_sizes, self.activation, self.batch_norm, name="hidden")(
        z, train=train)
    return OUTPUT_ACTIVATIONS[self.output_activation](nn.Dense(self.output_size, name="out")(h))


class MLPEncoder(nn.Module):
  """E: x -> z, deterministic (BiGAN) or a reparameterised Gaussian (ALI).

  Returns `(z, z_mean)`. The stochastic encoder predicts mu and sigma = softplus(s) and
  samples z = mu + sigma * eps with eps from the `latent` rng stream; the deterministic
  encoder returns z = z_mean = mu. The last hidden layer (the "penultimate" features that
  the BiGAN paper also evaluates) is sown as intermediates/features and, with a bounding
  output activation, mu's pre-activation as intermediates/logits.
  """

  latent_dim: int
  hidden_sizes: Sequence[int]
  activation: str = "leaky_relu"
  batch_norm: bool = False
  stochastic: bool = False
  # "tanh" bounds the mean to (-1, 1), the support of a uniform prior. Unbounded, E(x) can
  # drift outside the prior's support along the direction a locally linear D points to, and
  # D then separates the real pairs by |z| alone.
  output_activation: str = "linear"

  @nn.compact
  def __call__(self, x, *, train: bool):
    h = _HiddenStack(self.hidden_sizes, self.activation, self.batch_norm, name="hidden")(
        x, train=train)
    self.sow("intermediates", "features", h)
    logits = nn.Dense(self.latent_dim, name="mean")(h)
    if self.output_activation != "linear":
      # The BiGAN paper's 1-NN features: its code measures E's linear output, before the
      # squashing onto the prior's support, which compresses distances near the bounds.
      self.sow("intermediates", "logits", logits)
    mean = OUTPUT_ACTIVATIONS[self.output_activation](logits)
    if not self.stochastic:
      return mean, mean
    scale = nn.softplus(nn.Dense(self.latent_dim, name="scale")(h)) + 1e-6
    eps = jax.random.normal(self.make_rng("latent"), mean.shape, mean.dtype)
    return mean + scale * eps, mean


class MLPDiscriminator(nn.Module):
  """D: (x, z) -> logit. With z=None it is the plain GAN discriminator D(x).

  The last hidden layer is sown as intermediates/features.
  """

  hidden_sizes: Sequence[int]
  activation: str = "leaky_relu"
  batch_norm: bool = False

  @nn.compact
  def __call__(self, x, z: Optional[jax.Array] = None, *, train: bool):
    h = _HiddenStack(self.hidden_sizes, self.activation, self.batch_norm, name="hidden")(
        x, z, train=train)
    self.sow("intermediates", "features", h)  # The "discriminator features" baseline.
    logit = nn.Dense(1, name="out")(h)
    if z is not None:
      logit = logit + nn.Dense(1, use_bias=False, name="side_out")(z)
    return logit[:, 0]
