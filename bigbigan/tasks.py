"""What the trainer needs from an experiment's data, one class per `config.dataset`.

A task gives the data's dimension, this process's training batches from any step on (host
numpy, uint8 for images), the on-device normalisation applied inside the jitted step, the
periodic evaluator, and the state as inference sees it (for BigBiGAN: with standing
BatchNorm statistics for the EMA networks, standing_stats.py). The trainer itself knows no
dataset. The MLP networks train on the mixture or flattened MNIST (`config.dataset` picks
the task); BigBiGAN's networks (`config.network="biggan"`) on any image dataset of
data/images.py (`ImageTask`): a TFDS dataset of its FRAMING, or a directory of images,
"folder:PATH" (data/folder.py), which the pipeline reads as it reads a TFDS dataset.
"""

import itertools
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from bigbigan import bigbigan_steps
from bigbigan import sharding
from bigbigan import standing_stats
from bigbigan.data import images
from bigbigan.data import mnist
from bigbigan.data import pipeline
from bigbigan.data.toy import Mixture
from bigbigan.evaluation.images import ImageEvaluator
from bigbigan.evaluation.mixture import MixtureEvaluator
from bigbigan.evaluation.mnist import MnistEvaluator
from bigbigan.models.networks import Networks
from bigbigan.state import TrainState

Evaluator = Callable[[TrainState, int], dict[str, float]]
InferenceStateFn = Callable[[TrainState], TrainState]


class _StateAsItIs:
  """For tasks whose evaluation runs the state as training left it (the MLP networks)."""

  @staticmethod
  def make_inference_state_fn(networks: Networks) -> InferenceStateFn:
    del networks
    return _unchanged


def _unchanged(state: TrainState) -> TrainState:
  return state


class Task(Protocol):
  data_dim: int
  num_classes: int  # > 0: a conditional model, trained on (x, labels) batches.
  batch_axis: int  # The axis of the training batches that holds the examples.

  def train_batches(self, start_step: int) -> Iterator[Any]: ...
  def normalise(self, x: jax.Array) -> jax.Array: ...
  def make_evaluator(self, networks: Networks) -> Evaluator: ...
  # The state as evaluation, sampling and checkpoints should hold it (jitted work inside).
  def make_inference_state_fn(self, networks: Networks) -> InferenceStateFn: ...


class MixtureTask(_StateAsItIs):
  """The 2-D Gaussian mixture (data/toy.py); unconditional."""

  num_classes = 0
  batch_axis = 0

  def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh, workdir: str):
    self._config, self._mesh, self._workdir = config, mesh, workdir
    self.mixture = Mixture.from_config(config)
    self.data_dim = self.mixture.train.shape[1]

  def train_batches(self, start_step: int) -> Iterator[np.ndarray]:
    return self.mixture.train_batches(self._config.batch_size, self._config.seed, start_step)

  @staticmethod
  def normalise(x: jax.Array) -> jax.Array:
    return x

  def make_evaluator(self, networks: Networks) -> Evaluator:
    return MixtureEvaluator(self._config, self.mixture, networks, self._mesh, self._workdir)


class MnistTask(_StateAsItIs):
  """Permutation-invariant MNIST through TFDS: flattened 784-pixel images."""

  data_dim = mnist.MNIST_PIXELS
  batch_axis = 0

  def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh, workdir: str):
    self._config, self._mesh, self._workdir = config, mesh, workdir
    # Fails early, with the clear message, if the dataset is not prepared.
    pipeline.prepared_builder(config.dataset, config.data_dir)
    permutation = None
    if config.pixel_permutation_seed is not None:
      permutation = mnist.pixel_permutation(config.pixel_permutation_seed)
    self._preprocess = mnist.mnist_preprocess(permutation)
    self.num_classes = mnist.MNIST_CLASSES if config.conditional else 0

  def train_batches(self, start_step: int) -> Iterator[Any]:
    """Images, or (images, labels) for a conditional model."""
    c = self._config
    for batch in pipeline.train_batches(c.dataset, c.train_split, c.batch_size, c.seed,
                                        self._preprocess, c.data_dir, start_step):
      yield (batch["image"], batch["label"]) if self.num_classes else batch["image"]

  @staticmethod
  def normalise(x: jax.Array) -> jax.Array:
    return mnist.normalise_pixels(x)

  def make_evaluator(self, networks: Networks) -> Evaluator:
    return MnistEvaluator(self._config, networks, self._mesh, self._workdir,
                          self._preprocess, self.normalise, self.num_classes)


# Examples in the shuffle buffer of the standing statistics' stream: a few batches' worth
# (the stream is rebuilt at every refresh, so filling a large buffer would cost each time).
STANDING_STATS_SHUFFLE_BUFFER = 4096


class ImageTask:
  """BigBiGAN's data: RGB images at the encoder's resolution (data/images.py), unlabelled
  in training (labels serve the evaluation only), from TFDS or an image folder.

  Each training batch holds the images of one BigBiGAN iteration, uint8
  [d_steps, batch rows of this process, R, R, 3]: one slice per discriminator step, the
  last one also for the encoder/generator step.
  """

  num_classes = 0
  data_dim = 0  # Images: the networks take their shapes from the config.
  batch_axis = bigbigan_steps.IMAGE_BATCH_AXIS

  def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh, workdir: str):
    self._config, self._mesh, self._workdir = config, mesh, workdir
    # Fails early, with the clear message, if the dataset is not prepared (or the folder
    # is missing or holds no image).
    pipeline.prepared_builder(config.dataset, config.data_dir)
    resolution = config.encoder.resolution if config.encoder.kind != "none" else (
        config.resolution)
    self._train_preprocess = images.image_preprocess(config.dataset, resolution, train=True,
                                                     seed=config.seed)
    self._eval_preprocess = images.image_preprocess(config.dataset, resolution, train=False)

  def train_batches(self, start_step: int) -> Iterator[np.ndarray]:
    c = self._config
    for batch in pipeline.train_batches(c.dataset, c.train_split, c.d_steps * c.batch_size,
                                        c.seed, self._train_preprocess, c.data_dir,
                                        start_step):
      rows = batch["image"]
      yield rows.reshape((c.d_steps, -1) + rows.shape[1:])

  @staticmethod
  def normalise(x: jax.Array) -> jax.Array:
    return bigbigan_steps.normalise_images(x)

  def _standing_stats_images(self) -> Iterator[jax.Array]:
    """The first `standing_stats_batches` training batches of a stream of their own (seed
    + 1; the same images at every refresh, so a resumed run computes what an uninterrupted
    one does), as global uint8 arrays."""
    c = self._config
    rows = pipeline.train_batches(c.dataset, c.train_split, c.batch_size, c.seed + 1,
                                  self._train_preprocess, c.data_dir,
                                  shuffle_buffer_size=STANDING_STATS_SHUFFLE_BUFFER)
    for batch in itertools.islice(rows, c.standing_stats_batches):
      yield sharding.to_global_batch(batch["image"], self._mesh)

  def make_inference_state_fn(self, networks: Networks) -> InferenceStateFn:
    """state -> the state with standing statistics of its EMA networks (standing_stats.py);
    unchanged if the config keeps none (`standing_stats_batches` 0)."""
    if not self._config.get("standing_stats_batches", 0):
      return _unchanged
    refresh = standing_stats.make_standing_stats_fn(self._config, networks, self._mesh)
    return lambda state: refresh(state, self._standing_stats_images())

  def make_evaluator(self, networks: Networks,
                     metrics: Optional[Sequence[str]] = None) -> Evaluator:
    """The evaluation suite (evaluation/images.py) of `metrics`, by default the config's."""
    config, mesh = self._config, self._mesh
    init = jax.jit(bigbigan_steps.state_initializer(config, networks),
                   out_shardings=sharding.replicated(mesh))
    for_inference = self.make_inference_state_fn(networks)
    # The run's own initial state (the trainer initialises from the same seed), with the
    # standing statistics of its random networks, as the trained ones get theirs.
    return ImageEvaluator(config, networks, mesh, self._workdir, self._eval_preprocess,
                          initial_state=lambda: for_inference(
                              init(jax.random.PRNGKey(config.seed))),
                          metrics=metrics)


TASKS = {"mixture": MixtureTask, "mnist": MnistTask}


def make_task(config: ml_collections.ConfigDict, mesh: Mesh, workdir: str) -> Task:
  if config.network == "biggan":
    return ImageTask(config, mesh, workdir)
  return TASKS[config.dataset](config, mesh, workdir)
