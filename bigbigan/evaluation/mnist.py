"""Periodic evaluation on MNIST: the BiGAN paper's 1-NN accuracy (and a linear probe) on the
encoder's features, raw pixels as the reference, and image grids of x, G(z) and G(E(x))."""

import itertools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax.sharding import Mesh

from bigbigan import sharding
from bigbigan import steps
from bigbigan.data import mnist as mnist_data
from bigbigan.data import pipeline
from bigbigan.evaluation import plots
from bigbigan.evaluation.representation import compute_features, representation_metrics
from bigbigan.models.networks import Networks
from bigbigan.state import TrainState

GRID_IMAGES = 100
# The headline representation: the first of these that the model has.
HEADLINE_FEATURES = ("z_logits", "z_mean", "discriminator")


class MnistEvaluator:
  """Call with (state, step) for the metrics; on process 0 it also writes an image grid.

  Metrics: `knn_1_accuracy` and `linear_accuracy` on the headline features (L2), the same
  with `_cosine`, the other features' metrics with their name as suffix, and the raw-pixel
  references `knn_1_accuracy_pixels` and `linear_accuracy_pixels` (computed once). The
  headline features are what the BiGAN paper's code measures: E's linear output
  (`z_logits`, before the tanh that bounds E(x) to the prior's support; `z_mean` for an
  unbounded E) or, for a GAN without an encoder, D's last hidden layer (`discriminator`).
  A conditional model's sample grid has one class per row.
  """

  def __init__(self, config: ml_collections.ConfigDict, networks: Networks, mesh: Mesh,
               workdir: str, preprocess: pipeline.Preprocess,
               normalise: Callable[[jax.Array], jax.Array], num_classes: int = 0):
    self._config = config
    self._mesh = mesh
    self._workdir = workdir
    self._preprocess = preprocess
    self._num_classes = num_classes
    # D's features are a representation of x when D judges x alone (and needs no label).
    d_features = not steps.joint_discriminator(config, networks) and not num_classes
    self._fns = steps.make_inference_fns(networks, mesh, discriminator_features=d_features)
    self._normalise = jax.jit(normalise)
    self._pixel_metrics = None
    latents = np.asarray(steps.sample_prior(jax.random.PRNGKey(config.seed + 1),
                                            (GRID_IMAGES, config.latent_dim),
                                            config.latent_prior))
    if num_classes:
      rows = np.arange(GRID_IMAGES) * num_classes // GRID_IMAGES  # Class i fills row i.
      latents = np.asarray(self._with_labels(latents, rows))
    self._latents = sharding.from_host_array(latents, mesh)

  def _with_labels(self, z, labels):
    """A conditional G's input: z with the one-hot labels appended (host or device arrays)."""
    return jnp.concatenate([z, jax.nn.one_hot(labels, self._num_classes)], axis=1)

  def _batches(self, split: str):
    c = self._config
    return pipeline.eval_batches(c.dataset, split, c.eval_batch_size, self._preprocess,
                                 c.data_dir)

  def _split_features(self, feature_fn, split: str, first_batch: Optional[list] = None):
    """Features of `split`; appends the split's first batch to `first_batch` if given.

    (Reading the first batch again would start a second, abandoned pass over a split that
    TFDS caches in memory, which TensorFlow warns about.)
    """
    batches = self._batches(split)
    if first_batch is not None:
      first_batch.append(next(batches))
      batches = itertools.chain(first_batch, batches)
    return compute_features(feature_fn, batches, self._mesh)

  def _pixels(self) -> dict[str, float]:
    """The raw-pixel reference (L2 1-NN and the probe), computed on the first call only."""
    if self._pixel_metrics is None:
      to_pixels = lambda images: {"pixels": self._normalise(images)}
      train = self._split_features(to_pixels, self._config.train_split)
      test = self._split_features(to_pixels, self._config.eval_split)
      self._pixel_metrics = representation_metrics(
          train, test, self._mesh, knn_metrics=("l2",), probe=self._config.eval_linear_probe)
    return self._pixel_metrics

  def __call__(self, state: TrainState, step: int) -> dict[str, float]:
    metrics = dict(self._pixels())
    grids = {"samples G(z)": self._fns["generate"](state, self._latents)}
    first_batch = []  # The evaluation split's, for the reconstructions.
    if "features" in self._fns:
      features = lambda images: self._fns["features"](state, self._normalise(images))
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
    if "encode" in self._fns:  # An encoder: its features were computed, with first_batch.
      # The first global evaluation batch (each process holds its own rows of it).
      batch = first_batch[0]
      x = self._normalise(sharding.to_global_batch(batch["image"], self._mesh))
      _, z_mean = self._fns["encode"](state, x, jax.random.PRNGKey(0))
      if self._num_classes:
        z_mean = self._with_labels(
            z_mean, sharding.to_global_batch(batch["label"], self._mesh))
      grids = {"data x": x, **grids,
               "reconstructions G(E(x))": self._fns["generate"](state, z_mean)}
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
