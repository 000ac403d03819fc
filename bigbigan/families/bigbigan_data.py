"""The BigBiGAN family's data: RGB images from TFDS or an image folder at the encoder's
resolution, for training, evaluation and the standing statistics (bigbigan.py's
`make_data`)."""

import itertools
from typing import Callable, Iterator

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from bigbigan import sharding
from bigbigan.data import images
from bigbigan.data import pipeline
from bigbigan.families import standing_stats
from bigbigan.families.bigbigan_update import IMAGE_BATCH_AXIS
from bigbigan.families.common import normalise_images
from bigbigan.models.networks import Networks
from bigbigan.state import TrainState


# Examples in the shuffle buffer of the standing statistics' stream: a few batches' worth
# (the stream is rebuilt at every refresh, so filling a large buffer would cost each time).
STANDING_STATS_SHUFFLE_BUFFER = 4096


class ImageData:
  """BigBiGAN's data: RGB images at the encoder's resolution (data/images.py), unlabelled
  in training (labels serve the evaluation only), from TFDS or an image folder.

  Each training batch holds the images of one BigBiGAN iteration, uint8
  [d_steps, batch rows of this process, R, R, 3]: one slice per discriminator step, the
  last one also for the encoder/generator step.
  """

  num_classes = 0  # Unconditional.
  batch_axis = IMAGE_BATCH_AXIS

  def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh):
    self._config, self._mesh = config, mesh
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
    return normalise_images(x)

  def eval_batches(self, split: str) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of the evaluation batches of `split`: "image" (uint8 at E's
    resolution), "label" and "mask" (pipeline.eval_batches)."""
    c = self._config
    return pipeline.eval_batches(c.dataset, split, c.eval_batch_size, self._eval_preprocess,
                                 c.data_dir)

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

  def make_inference_state_fn(self, networks: Networks
                              ) -> Callable[[TrainState], TrainState]:
    """state -> the state with standing statistics of its EMA networks (standing_stats.py);
    unchanged if the config keeps none (`standing_stats_batches` 0)."""
    if not self._config.get("standing_stats_batches", 0):
      return lambda state: state
    refresh = standing_stats.make_standing_stats_fn(self._config, networks, self._mesh)
    return lambda state: refresh(state, self._standing_stats_images())
