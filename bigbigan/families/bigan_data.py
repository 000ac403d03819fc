"""The MLP family's training data: the 2-D Gaussian mixture, drawn in memory, and
permutation-invariant MNIST through TFDS (bigan.py's `make_data`)."""

from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np

from bigbigan.data import mnist
from bigbigan.data import pipeline
from bigbigan.data.toy import Mixture
from bigbigan.models.networks import Networks
from bigbigan.state import TrainState


class MixtureData:
  """The 2-D Gaussian mixture (data/toy.py), drawn in memory; unconditional."""

  num_classes = 0
  batch_axis = 0

  def __init__(self, config: ml_collections.ConfigDict):
    self._config = config
    self.mixture = Mixture.from_config(config)

  def train_batches(self, start_step: int) -> Iterator[np.ndarray]:
    return self.mixture.train_batches(self._config.batch_size, self._config.seed, start_step)

  @staticmethod
  def normalise(x: jax.Array) -> jax.Array:
    return x

  @staticmethod
  def make_inference_state_fn(networks: Networks) -> Callable[[TrainState], TrainState]:
    del networks  # Evaluation runs the state as training left it.
    return lambda state: state


class MnistData:
  """Permutation-invariant MNIST through TFDS: flattened 784-pixel images (uint8), with
  their labels for a conditional model."""

  batch_axis = 0

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    """`num_classes` > 0: a conditional model, trained on (images, labels) batches."""
    self._config = config
    # Fails early, with the clear message, if the dataset is not prepared.
    pipeline.prepared_builder(config.dataset, config.data_dir)
    permutation = None
    if config.pixel_permutation_seed is not None:
      permutation = mnist.pixel_permutation(config.pixel_permutation_seed)
    self._preprocess = mnist.mnist_preprocess(permutation)
    self.num_classes = num_classes

  def train_batches(self, start_step: int) -> Iterator[Any]:
    """Images, or (images, labels) for a conditional model."""
    c = self._config
    for batch in pipeline.train_batches(c.dataset, c.train_split, c.batch_size, c.seed,
                                        self._preprocess, c.data_dir, start_step):
      yield (batch["image"], batch["label"]) if self.num_classes else batch["image"]

  def eval_batches(self, split: str) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of the evaluation batches of `split` (pipeline.eval_batches)."""
    c = self._config
    return pipeline.eval_batches(c.dataset, split, c.eval_batch_size, self._preprocess,
                                 c.data_dir)

  @staticmethod
  def normalise(x: jax.Array) -> jax.Array:
    return mnist.normalise_pixels(x)

  make_inference_state_fn = staticmethod(MixtureData.make_inference_state_fn)

