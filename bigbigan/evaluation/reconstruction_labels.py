"""The `reconstruction_labels` evaluator: does G(E(x)) keep x's class?

A classifier of real images that knows nothing of the model, the cosine 1-NN on raw pixels
against the labelled `knn_train_split`, labels each reconstruction G(E(x)) of `eval_split`
(E's mean, at G's resolution); the metric is the fraction whose label is x's own:

  reconstruction_label_agreement  the fraction of eval_split whose G(E(x)) the pixel
                                  1-NN labels as x;
  knn_1_accuracy_cosine_pixels    the same classifier's accuracy on the real eval_split
                                  images: its own reliability, and the raw-pixel reference
                                  that the encoder's 1-NN must beat;
  reconstruction_mse              the mean squared error of G(E(x)) against x, pixels in
                                  [0, 1].

Pixels are in [0, 1] at G's resolution, the reconstructions' space. A dataset stored in
grey (MNIST) is classified on the mean of the three channels: its real images repeat one
channel three times, so a query's cosine with each of them is its channel mean's cosine
times a factor of the query alone, and the nearest neighbour, of a real image or of a
coloured reconstruction, is the same at a third of the cost. The classifier's images are
held in host memory for the whole run (N x resolution^2 floats per channel: 200 MB for
MNIST's 50,000 at 32 pixels), so this is an evaluator for small labelled datasets; on
ImageNet a pixel 1-NN is no classifier at all.
"""

import jax
import numpy as np

from bigbigan.data import pipeline
from bigbigan.evaluation.context import EvaluationContext, MetricUnavailable
from bigbigan.evaluation.knn import nearest_neighbor_accuracy
from bigbigan.evaluation.representation import compute_features
from bigbigan.families.common import PredictFns, to_discriminator_resolution
from bigbigan.state import TrainState


def _flat_unit_pixels(images: jax.Array, grey: bool = False) -> jax.Array:
  """[B, H, W, C] in [-1, 1] -> [B, H * W * C] in [0, 1], or [B, H * W], the channels'
  mean, if `grey`."""
  unit = (images.astype(np.float32) + 1.0) / 2.0
  if grey:
    unit = unit.mean(axis=-1)
  return unit.reshape(images.shape[0], -1)


class ReconstructionLabels:
  """The `reconstruction_labels` evaluator. The classifier's pixels, and its accuracy on
  the real eval_split, are computed at the first evaluation and kept for the run."""

  def __init__(self, context: EvaluationContext):
    self._context = context
    self._config = config = context.config
    features = pipeline.prepared_builder(config.dataset, config.data_dir).info.features
    self._labelled = "label" in features
    self._grey = features["image"].shape[-1] == 1  # Classified on the channels' mean.
    self._classifier = None  # (pixels [N, D], labels [N]) of knn_train_split.
    self._pixel_accuracy = None

  def _pixels(self, predict: PredictFns, split: str):
    """(real pixels [N, D] in [0, 1] at G's resolution, labels [N]) of `split`."""
    c = self._config

    def pixels(images):
      real = to_discriminator_resolution(predict.normalise(images), c.resolution)
      return {"pixels": _flat_unit_pixels(real, self._grey)}

    features, labels = compute_features(
        pixels, self._context.data.eval_batches(split), self._context.mesh,
        what=f"pixels of {split}", total=pipeline.num_examples(c.dataset, split, c.data_dir))
    return features["pixels"], labels

  def run(self, predict: PredictFns, state: TrainState, step: int) -> dict:
    del step
    if predict.encode is None:
      return {}  # The no-encoder GAN reconstructs nothing.
    if not self._labelled:
      raise MetricUnavailable(f"{self._config.dataset} has no class labels: the "
                              "reconstructions' labels need a labelled dataset")
    c, mesh = self._config, self._context.mesh
    if self._classifier is None:
      self._classifier = self._pixels(predict, c.knn_train_split)
      real, labels = self._pixels(predict, c.eval_split)
      self._pixel_accuracy = nearest_neighbor_accuracy(*self._classifier, real, labels, mesh,
                                                       "cosine")

    def reconstruct(images):
      x = predict.normalise(images)
      real = to_discriminator_resolution(x, c.resolution)
      reconstruction = predict.generate(state, predict.encode(state, x)["z_mean"])
      error = jax.numpy.mean(
          (_flat_unit_pixels(reconstruction) - _flat_unit_pixels(real)) ** 2, axis=1)
      return {"reconstruction": _flat_unit_pixels(reconstruction, self._grey),
              "error": error[:, None]}

    outputs, labels = compute_features(
        reconstruct, self._context.data.eval_batches(c.eval_split), mesh,
        what=f"reconstructions of {c.eval_split}",
        total=pipeline.num_examples(c.dataset, c.eval_split, c.data_dir))
    agreement = nearest_neighbor_accuracy(*self._classifier, outputs["reconstruction"],
                                          labels, mesh, "cosine")
    return {"reconstruction_label_agreement": agreement,
            "knn_1_accuracy_cosine_pixels": self._pixel_accuracy,
            "reconstruction_mse": float(np.mean(outputs["error"]))}
