"""ResNet v2 (pre-activation) backbones, BigBiGAN's ResNet-50 encoder trunk.

    backbone = ResNetV2(depth=50, width=1)
    features = backbone.apply(variables, images, train=False)   # [N, 2048], average-pooled

The architecture of the "Revisiting self-supervised visual representation learning" code
that BigBiGAN's encoders follow: a 7x7 stride-2 root convolution and 3x3 stride-2 max
pooling, four stages of bottleneck units (BN, ReLU, 1x1 conv, BN, ReLU, 3x3 conv carrying
the stride, BN, ReLU, 1x1 conv; a 1x1 projection shortcut where the shape changes), then BN,
ReLU and global average pooling. `width` multiplies every stage's channels.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Depth -> units per stage.
STAGE_UNITS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def _conv(features: int, kernel: int, stride: int = 1, dtype: Any = jnp.float32,
          name: str = None) -> nn.Conv:
  # Explicit symmetric padding, as the reference's fixed_padding, whatever the stride.
  pad = ((kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2)
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=(pad, pad),
                 use_bias=False, dtype=dtype, param_dtype=jnp.float32,
                 kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                 name=name)


def batch_norm(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  # TensorFlow's defaults, which the reference trunks used: momentum 0.99, epsilon 1e-3.
  return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3,
                      dtype=dtype, param_dtype=jnp.float32, name=name)


class Bottleneck(nn.Module):
  """The pre-activation bottleneck: output `features` channels, `features // 4` inside.

  With `shortcut=False` it returns the residual branch alone (a RevNet unit's F).
  """

  features: int
  stride: int = 1
  shortcut: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    inner = self.features // 4
    activated = nn.relu(batch_norm(train, self.dtype, "bn_0")(x))
    h = _conv(inner, 1, dtype=self.dtype, name="conv_0")(activated)
    h = nn.relu(batch_norm(train, self.dtype, "bn_1")(h))
    h = _conv(inner, 3, self.stride, dtype=self.dtype, name="conv_1")(h)
    h = nn.relu(batch_norm(train, self.dtype, "bn_2")(h))
    h = _conv(self.features, 1, dtype=self.dtype, name="conv_2")(h)
    if not self.shortcut:
      return h
    if self.stride > 1 or x.shape[-1] != self.features:
      # The projection sees the activated input, as in the pre-activation ResNet.
      x = _conv(self.features, 1, self.stride, dtype=self.dtype, name="projection")(activated)
    return x + h


def root(x: jax.Array, features: int, dtype: Any) -> jax.Array:
  """The stem: 7x7 stride-2 convolution, 3x3 stride-2 max pooling (a 4x smaller image)."""
  x = _conv(features, 7, 2, dtype=dtype, name="root")(x.astype(dtype))
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class ResNetV2(nn.Module):
  """images [N, H, W, 3] -> average-pooled features [N, 32 * base_width * width].

  `base_width` (the root's channels at width 1) is 64 in ResNet-50; tests shrink it.
  """

  depth: int = 50
  width: int = 1
  base_width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = root(x, self.base_width * self.width, self.dtype)
    features = 4 * self.base_width * self.width
    for stage, units in enumerate(STAGE_UNITS[self.depth]):
      for unit in range(units):
        stride = 2 if stage > 0 and unit == 0 else 1
        x = Bottleneck(features, stride, dtype=self.dtype, name=f"stage_{stage}_unit_{unit}")(
            x, train=train)
      features *= 2
    x = nn.relu(batch_norm(train, self.dtype, "bn_out")(x))
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


ResNet50 = functools.partial(ResNetV2, depth=50)
