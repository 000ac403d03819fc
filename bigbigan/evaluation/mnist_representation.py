"""Periodic evaluation on MNIST: the BiGAN paper's 1-NN accuracy (and a linear probe) on the
encoder's features, raw pixels as the reference, and image grids of x, G(z) and G(E(x))."""

import itertools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from bigbigan import sharding
from bigbigan.data import mnist as mnist_data
from bigbigan.evaluation import plots
from bigbigan.evaluation.context import EvaluationContext
from bigbigan.evaluation.representation import compute_features, representation_metrics
from bigbigan.families.common import PredictFns
from bigbigan.state import TrainState

GRID_IMAGES = 100
# The headline representation: the first of these that the model has.
HEADLINE_FEATURES = ("z_logits", "z_mean", "discriminator")


class MnistRepresentation:
  """The `mnist_representation` evaluator; on process 0 it also writes an image grid.

  Metrics: `knn_1_accuracy` and `linear_accuracy` on the headline features (L2), the same
  with `_cosine`, the other features' metrics with their name as suffix, and the raw-pixel
  references `knn_1_accuracy_pixels` and `linear_accuracy_pixels` (computed once). The
  headline features are what the BiGAN paper's code measures: E's linear output
  (`z_logits`, before the tanh that bounds E(x) to the prior's support; `z_mean` for an
  unbounded E) or, for a GAN without an encoder, D's last hidden layer (`discriminator`).
  A conditional model's sample grid has one class per row.
  """

  def __init__(self, context: EvaluationContext):
    self._context = context
    self._config = context.config
    self._mesh = context.mesh
    self._workdir = context.workdir
    self._num_classes = context.data.num_classes
    self._pixel_metrics = None
    self._latents = None  # The sample grid's, drawn at the first run.

  def _with_labels(self, z, labels):
    """A conditional G's input: z with the one-hot labels appended (host or device arrays)."""
    return jnp.concatenate([z, jax.nn.one_hot(labels, self._num_classes)], axis=1)

  def _split_features(self, feature_fn, split: str, first_batch: Optional[list] = None):
    """Features of `split`; appends the split's first batch to `first_batch` if given.

    (Reading the first batch again would start a second, abandoned pass over a split that
    TFDS caches in memory, which TensorFlow warns about.)
    """
    batches = self._context.data.eval_batches(split)
    if first_batch is not None:
      first_batch.append(next(batches))
      batches = itertools.chain(first_batch, batches)
    return compute_features(feature_fn, batches, self._mesh)

  def _pixels(self, normalise) -> dict[str, float]:
    """The raw-pixel reference (L2 1-NN and the probe), computed on the first call only."""
    if self._pixel_metrics is None:
      to_pixels = lambda images: {"pixels": normalise(images)}
      train = self._split_features(to_pixels, self._config.train_split)
      test = self._split_features(to_pixels, self._config.eval_split)
      self._pixel_metrics = representation_metrics(
          train, test, self._mesh, knn_metrics=("l2",), probe=self._config.eval_linear_probe)
    return self._pixel_metrics

  def _grid_latents(self, predict: PredictFns) -> jax.Array:
    """GRID_IMAGES latents (a conditional model's with class i filling row i)."""
    latents = predict.sample_latents(jax.random.PRNGKey(self._config.seed + 1), GRID_IMAGES)
    if self._num_classes:
      rows = np.arange(GRID_IMAGES) * self._num_classes // GRID_IMAGES
      latents = np.asarray(self._with_labels(latents, rows))
    return sharding.from_host_array(latents, self._mesh)

  def run(self, predict: PredictFns, state: TrainState, step: int) -> dict[str, float]:
    if self._latents is None:
      self._latents = self._grid_latents(predict)
    metrics = dict(self._pixels(predict.normalise))
    grids = {"samples G(z)": predict.generate(state, self._latents)}
    first_batch = []  # The evaluation split's, for the reconstructions.
    if predict.features is not None:
      features = lambda images: predict.features(state, predict.normalise(images))
      train = self._split_features(features, self._config.train_split)
      test = self._split_features(features, self._config.eval_split, first_batch)
      found = representation_metrics(train, test, self._mesh,
                                     probe=self._config.eval_linear_probe)
      # The representation the paper evaluates carries the headline names, knn_1_accuracy
      # and linear_accuracy.
      headline = next(name for name in HEADLINE_FEATURES if name in train[0])
      suffix = f"_{headline}"
      for name, value in found.items():
        metrics[name[:-len(suffix)] if name.endswith(suffix) else name] = value
    if predict.encode is not None:  # An encoder: its features were computed, with first_batch.
      # The first global evaluation batch (each process holds its own rows of it).
      batch = first_batch[0]
      x = predict.normalise(sharding.to_global_batch(batch["image"], self._mesh))
      _, z_mean = predict.encode(state, x, jax.random.PRNGKey(0))
      if self._num_classes:
        z_mean = self._with_labels(
            z_mean, sharding.to_global_batch(batch["label"], self._mesh))
      grids = {"data x": x, **grids,
               "reconstructions G(E(x))": predict.generate(state, z_mean)}
    # A collective: every process gathers, process 0 alone draws.
    side = int(np.sqrt(mnist_data.MNIST_PIXELS))
    images = {name: sharding.gather_rows(v, GRID_IMAGES).reshape(-1, side, side)
              for name, v in grids.items()}
    if jax.process_index() == 0:
      if self._config.pixel_permutation_seed is not None:
        # Show digits, not permuted pixels: undo the fixed permutation for the figure.
        inverse = np.argsort(mnist_data.pixel_permutation(self._config.pixel_permutation_seed))
        images = {name: v.reshape(len(v), -1)[:, inverse].reshape(v.shape)
                  for name, v in images.items()}
      title = f"step {step}: 1-NN {100 * metrics.get('knn_1_accuracy', float('nan')):.2f}%"
      plots.save_image_grids(epath.Path(self._workdir) / f"mnist_{step:07d}.png", images,
                             title)
    return metrics
