"""BigGAN's building blocks: spectral-normalised Dense/Conv/Embed, conditional BatchNorm, the
non-local (self-attention) block and the up/down ResBlocks.

Conventions:
- Spectral norm keeps its power-iteration state (the left singular vector estimate `u` and
  the last `sigma`) in its own collection, SPECTRAL, in float32, apart from BatchNorm's
  statistics; one power iteration per call, and only with `train=True` (apply with
  `mutable=[SPECTRAL, "batch_stats"]` to keep the update).
- `dtype` is the compute dtype (bfloat16 for speed); params stay float32 (`param_dtype`), and
  normalisation statistics, sigma and the attention softmax are computed in float32.
- Weights use BigGAN's orthogonal initialisation.
- Images are NHWC.
- The residual and non-local blocks take `train` as their last positional argument, so that
  `rematerialised` can make it static under `nn.remat`.
"""

import inspect
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

SPECTRAL = "spectral"
Dtype = Any
# "none": backprop reads every activation stored by the forward pass; "blocks": each residual
# and non-local block keeps only its inputs and recomputes its insides when backprop reaches
# it (one more forward of G's and D's blocks per step, for activation memory that falls
# from every layer's to every block's).
REMAT_POLICIES = ("none", "blocks")

orthogonal = nn.initializers.orthogonal()


def _l2_normalise(v: jax.Array, epsilon: float = 1e-12) -> jax.Array:
  return v * jax.lax.rsqrt(jnp.sum(v * v) + epsilon)


class SpectralNormalised(nn.Module):
  """Divides a weight by its largest singular value, estimated by power iteration.

  The weight is seen as a matrix [fan_in, out] (a conv kernel's spatial and input axes are
  flattened), so sigma is the operator norm that bounds the layer's Lipschitz constant.
  """

  n_power_iterations: int = 1

  @nn.compact
  def __call__(self, weight: jax.Array, *, update: bool) -> jax.Array:
    matrix = weight.reshape(-1, weight.shape[-1]).astype(jnp.float32)
    u = self.variable(SPECTRAL, "u", lambda: _l2_normalise(jax.random.normal(
        self.make_rng("params"), (matrix.shape[-1],), jnp.float32)))
    sigma = self.variable(SPECTRAL, "sigma", lambda: jnp.ones((), jnp.float32))
    u_hat = u.value
    if update:
      # The estimates are constants for the gradient, as in Miyato et al. and BigGAN.
      for _ in range(self.n_power_iterations):
        v_hat = _l2_normalise(matrix @ u_hat)
        u_hat = _l2_normalise(matrix.T @ v_hat)
      u_hat = jax.lax.stop_gradient(u_hat)
    v_hat = jax.lax.stop_gradient(_l2_normalise(matrix @ u_hat))
    estimate = v_hat @ matrix @ u_hat  # Differentiable in the weight, as in the paper.
    if update:
      u.value, sigma.value = u_hat, jax.lax.stop_gradient(estimate)
    return (weight / estimate.astype(weight.dtype)).astype(weight.dtype)


class SNDense(nn.Module):
  """A spectral-normalised Dense layer."""

  features: int
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    kernel = self.param("kernel", orthogonal, (x.shape[-1], self.features), self.param_dtype)
    kernel = SpectralNormalised(name="sn")(kernel, update=train)
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,),
                         self.param_dtype).astype(self.dtype)
    return y


class SNConv(nn.Module):
  """A spectral-normalised 2-D convolution, "SAME" padding, stride 1."""

  features: int
  kernel_size: int = 3
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", orthogonal, (k, k, x.shape[-1], self.features),
                        self.param_dtype)
    kernel = SpectralNormalised(name="sn")(kernel, update=train)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype), window_strides=(1, 1),
        padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,),
                         self.param_dtype).astype(self.dtype)
    return y


class SNEmbed(nn.Module):
  """A spectral-normalised embedding table (the projection discriminator's class vectors)."""

  num_embeddings: int
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, labels: jax.Array, *, train: bool) -> jax.Array:
    table = self.param("embedding", orthogonal, (self.num_embeddings, self.features),
                       self.param_dtype)
    table = SpectralNormalised(name="sn")(table, update=train)
    return jnp.take(table, labels, axis=0).astype(self.dtype)


class ConditionalBatchNorm(nn.Module):
  """BatchNorm whose gain and bias are linear in a conditioning vector.

  gain = 1 + W_g cond and bias = W_b cond (the "1 +" makes the layer plain BatchNorm at
  zero conditioning; BigGAN's code has it and implementations that drop it train worse).
  With `cond=None` it is BatchNorm with a learned gain and bias. Statistics are over every
  axis but the channels: under jit over a mesh, over the global batch (cross-replica BN).
  """

  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: Optional[jax.Array] = None, *,
               train: bool) -> jax.Array:
    unconditional = cond is None
    x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum,
                     epsilon=self.epsilon, use_scale=unconditional, use_bias=unconditional,
                     dtype=self.dtype, param_dtype=self.param_dtype, name="bn")(x)
    if unconditional:
      return x
    channels = x.shape[-1]
    # BigGAN's gain and bias maps are bias-free spectral-normalised linear layers.
    gain = 1.0 + SNDense(channels, use_bias=False, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="gain")(cond, train=train)
    bias = SNDense(channels, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                   name="bias")(cond, train=train)
    return x * gain[:, None, None, :] + bias[:, None, None, :]


def _pool(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def avg_pool(x: jax.Array) -> jax.Array:
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


def upsample(x: jax.Array) -> jax.Array:
  """Nearest-neighbour 2x upsampling."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class NonLocalBlock(nn.Module):
  """The self-attention block of SAGAN and BigGAN; the identity at initialisation.

  theta, phi and g are 1x1 convolutions to C/8, C/8 and C/2 channels, phi and g max-pooled
  2x2; each position attends over the pooled positions; a 1x1 convolution maps the result
  back to C channels, scaled by a learned scalar that starts at 0.
  """

  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    batch, height, width, channels = x.shape
    if channels < 8:
      raise ValueError(f"the non-local block needs at least 8 channels (C/8 for theta and "
                       f"phi), got {channels}: raise the channel multiplier ch")
    conv = lambda features, name: SNConv(features, kernel_size=1, use_bias=False,
                                         dtype=self.dtype, param_dtype=self.param_dtype,
                                         name=name)
    theta = conv(channels // 8, "theta")(x, train=train).reshape(batch, -1, channels // 8)
    phi = _pool(conv(channels // 8, "phi")(x, train=train)).reshape(batch, -1, channels // 8)
    g = _pool(conv(channels // 2, "g")(x, train=train)).reshape(batch, -1, channels // 2)
    logits = jnp.einsum("bqc,bkc->bqk", theta, phi, preferred_element_type=jnp.float32)
    attention = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    attended = jnp.einsum("bqk,bkc->bqc", attention, g).reshape(batch, height, width, -1)
    out = conv(channels, "out")(attended, train=train)
    scale = self.param("scale", nn.initializers.zeros, (), self.param_dtype)
    return x + scale.astype(self.dtype) * out


class ResBlockUp(nn.Module):
  """BigGAN's generator block: (CBN, ReLU, 2x up, 3x3 conv) twice, and a 1x1-conv shortcut.

  Both BatchNorms are conditioned on `cond` (the shared embedding and this block's z chunk).
  """

  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: Optional[jax.Array], train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = nn.relu(ConditionalBatchNorm(**kw, name="bn_0")(x, cond, train=train))
    h = SNConv(self.features, **kw, name="conv_0")(upsample(h), train=train)
    h = nn.relu(ConditionalBatchNorm(**kw, name="bn_1")(h, cond, train=train))
    h = SNConv(self.features, **kw, name="conv_1")(h, train=train)
    shortcut = SNConv(self.features, kernel_size=1, **kw, name="shortcut")(upsample(x),
                                                                           train=train)
    return h + shortcut


class ResBlockDown(nn.Module):
  """BigGAN's discriminator block: (ReLU, 3x3 conv) twice, then 2x2 average pooling.

  The first block of D takes the image itself: no ReLU before its first conv
  (`preactivation=False`), and its shortcut pools before the 1x1 conv rather than after. The
  shortcut is a learned 1x1 conv whenever the block changes the width or the resolution.
  """

  features: int
  downsample: bool = True
  preactivation: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = nn.relu(x) if self.preactivation else x
    h = SNConv(self.features, **kw, name="conv_0")(h, train=train)
    h = SNConv(self.features, **kw, name="conv_1")(nn.relu(h), train=train)
    if self.downsample:
      h = avg_pool(h)
    shortcut = x
    if self.downsample and not self.preactivation:
      shortcut = avg_pool(shortcut)
    if self.downsample or x.shape[-1] != self.features:
      shortcut = SNConv(self.features, kernel_size=1, **kw, name="shortcut")(shortcut,
                                                                             train=train)
    if self.downsample and self.preactivation:
      shortcut = avg_pool(shortcut)
    return h + shortcut


def rematerialised(block: type[nn.Module], remat: str) -> type[nn.Module]:
  """`block` (a class of this module whose last positional argument is `train`) as it is, or
  with `remat="blocks"` wrapped in `nn.remat`: the same parameters, variables and results,
  but its activations are recomputed in the backward pass instead of stored."""
  if remat not in REMAT_POLICIES:
    raise ValueError(f"remat={remat!r}: allowed {REMAT_POLICIES}")
  if remat == "none":
    return block
  # `train` picks Python branches (BatchNorm's mode, spectral norm's update): it is static.
  train_argnum = list(inspect.signature(block.__call__).parameters).index("train")
  return nn.remat(block, static_argnums=(train_argnum,))
