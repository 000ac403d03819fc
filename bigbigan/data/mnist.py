"""MNIST's preprocessing: flattened uint8 images, optionally with permuted pixels.

The BiGAN paper trains MLPs on "permutation-invariant" MNIST: each 28x28 image is flattened
to 784 pixels and, optionally, every image's pixels are reordered by one fixed random
permutation, which a model that sees no pixel neighbourhoods cannot tell apart. This is
what `mnist_preprocess` does inside the generic input pipeline (data/pipeline.py);
images stay uint8 until `normalise_pixels` runs on the devices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # Annotations only: the constants and normalise_pixels need no TensorFlow.
  from bigbigan.data.pipeline import Example, Preprocess

MNIST_PIXELS = 28 * 28
MNIST_CLASSES = 10


def pixel_permutation(seed: int) -> np.ndarray:
  """A fixed random permutation of MNIST's 784 pixels, drawn from `seed`.

  Models of flattened images that see no pixel neighbourhoods (MLPs) must reach the same
  accuracy on permuted images: the BiGAN paper's "permutation-invariant" MNIST.

  Args:
    seed: the permutation's seed.

  Returns:
    An int32 array holding each of 0..783 once.
  """
  return np.random.default_rng(seed).permutation(MNIST_PIXELS).astype(np.int32)


def mnist_preprocess(permutation: np.ndarray | None = None) -> Preprocess:
  """The preprocessing of permutation-invariant MNIST, for `train_batches`/`eval_batches`.

  Args:
    permutation: None, or a permutation of 0..783 (`pixel_permutation`); pixel `i` of every
      output image is pixel `permutation[i]` of the flattened input.

  Returns:
    A function from a TFDS MNIST example {"image": uint8[28, 28, 1] or its encoded bytes,
    "label": int64} to {"image": uint8[784], "label": int32}.
  """
  # Here, not at the top: the MLP family's update and predict functions, which use this
  # module's constants, run where TensorFlow is not installed.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if permutation is not None:
    permutation = np.asarray(permutation)
    if (permutation.shape != (MNIST_PIXELS,)
        or not np.array_equal(np.sort(permutation), np.arange(MNIST_PIXELS))):
      raise ValueError(f"permutation must hold each of 0..{MNIST_PIXELS - 1} once, got shape "
                       f"{permutation.shape}")
    permutation = permutation.astype(np.int32)

  def preprocess(example: Example) -> Example:
    image = example["image"]
    if image.dtype == tf.string:  # Encoded (PNG in TFDS's MNIST), decoded late.
      image = tf.io.decode_image(image, channels=1, expand_animations=False)
    image = tf.reshape(image, [MNIST_PIXELS])
    if permutation is not None:
      image = tf.gather(image, permutation)
    return {"image": image, "label": tf.cast(example["label"], tf.int32)}

  return preprocess


def normalise_pixels(images):
  """uint8 [0, 255] -> float32 [0, 1], the range of G's sigmoid output (on the devices)."""
  return images.astype(np.float32) / 255.0
