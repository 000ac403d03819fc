"""Does a loaded model's G(E(x)) keep x's class? Measured on images held in memory.

The `reconstruction_labels` evaluator measures this during training, on a TFDS split, with
a pixel 1-NN over tens of thousands of labelled images. This is the same measurement for a
model from `bigbigan.load` and a few thousand images in NumPy arrays, with no TensorFlow: a
shipped model's card gives its figure on the MNIST digits that ship with the package, and
the tests recompute it from the bundle.

As in the evaluator: the reconstruction is G(E(x)) from E's mean; the classifier is the
cosine 1-NN on raw pixels in [0, 1] at G's resolution, grey images classified on the mean of
the three channels; the real images are framed at E's resolution as evaluation frames them,
then averaged down to G's.
"""

import functools

import jax
import numpy as np

from bigbigan.families import bigbigan_predict


def _unit_rows(pixels: np.ndarray) -> np.ndarray:
  flat = pixels.reshape(len(pixels), -1).astype(np.float64)
  return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


def _unit_pixels(images: np.ndarray, grey: bool) -> np.ndarray:
  """[N, H, W, 3] in [-1, 1] -> [N, H, W(, 3)] in [0, 1], the channels' mean if `grey`."""
  unit = (np.asarray(images, np.float64) + 1.0) / 2.0
  return unit.mean(axis=-1) if grey else unit


@functools.partial(jax.jit, static_argnums=(1, 2))
def _fit(x: jax.Array, encoder_resolution: int, resolution: int) -> jax.Array:
  # As E sees them (the evaluation pipeline's framing), then as D sees E's images.
  x = bigbigan_predict.fit_resolution(x, encoder_resolution)
  return bigbigan_predict.fit_resolution(x, resolution, pool=True)


def at_generator_resolution(model, images: np.ndarray) -> np.ndarray:
  """uint8 images [N, H, W, 1 or 3] as [N, R, R, 3] floats in [-1, 1] at G's resolution R,
  as the evaluator has them: framed and resized to E's resolution as the evaluation pipeline
  does, then brought to D's as training does."""
  images = np.asarray(images)
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  x = images.astype(np.float32) / 127.5 - 1.0
  return np.asarray(_fit(x, model.encoder_resolution, model.resolution))


def reconstruction_agreement(model, images: np.ndarray, labels: np.ndarray,
                             reference_images: np.ndarray, reference_labels: np.ndarray
                             ) -> dict[str, float]:
  """The reconstruction figures of `model` on labelled uint8 images.

  Args:
    model: a bigbigan.pretrained.PretrainedBigBiGAN.
    images, labels: the images to reconstruct, uint8 [N, H, W, 1 or 3], and their labels.
    reference_images, reference_labels: the pixel classifier's labelled images.

  Returns:
    {"reconstruction_label_agreement": the fraction of images whose reconstruction the
     pixel 1-NN labels as the image, "knn_1_accuracy_cosine_pixels": the classifier's
     accuracy on the real images, "reconstruction_mse": the mean squared error of G(E(x))
     against x, pixels in [0, 1]}.
  """
  grey = np.asarray(images).shape[-1] == 1
  real = at_generator_resolution(model, images)
  reconstructions = model.reconstruct(images, use_sample=False)
  reference = _unit_rows(_unit_pixels(at_generator_resolution(model, reference_images), grey))
  reference_labels = np.asarray(reference_labels)

  def labels_of(pixels: np.ndarray) -> np.ndarray:
    return reference_labels[np.argmax(_unit_rows(pixels) @ reference.T, axis=1)]

  labels = np.asarray(labels)
  return {
      "reconstruction_label_agreement": float(np.mean(
          labels_of(_unit_pixels(reconstructions, grey)) == labels)),
      "knn_1_accuracy_cosine_pixels": float(np.mean(
          labels_of(_unit_pixels(real, grey)) == labels)),
      "reconstruction_mse": float(np.mean(
          (_unit_pixels(reconstructions, False) - _unit_pixels(real, False)) ** 2)),
  }
