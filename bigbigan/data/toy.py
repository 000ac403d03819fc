"""The 2-D mixture of Gaussians of the ALI paper: a grid of equally weighted isotropic modes.

The default is 25 modes with means on {-4, -2, 0, 2, 4}^2 and std 0.05, and a fixed training
set of 100,000 samples. Batches are a pure function of (seed, step), so a resumed run sees
exactly the data an uninterrupted one would, and each process reads only its own rows.
"""

import dataclasses
from typing import Iterator

import jax
import ml_collections
import numpy as np


def mixture_means(modes_per_axis: int, spacing: float) -> np.ndarray:
  """The (modes_per_axis**2, 2) grid of means, centred on the origin."""
  axis = (np.arange(modes_per_axis) - (modes_per_axis - 1) / 2) * spacing
  xs, ys = np.meshgrid(axis, axis, indexing="ij")
  return np.stack([xs.ravel(), ys.ravel()], axis=1)


def sample_mixture(rng: np.random.Generator, num_samples: int, means: np.ndarray,
                   std: float) -> np.ndarray:
  """`num_samples` float32 points: a uniformly chosen mode plus isotropic Gaussian noise."""
  modes = rng.integers(0, len(means), size=num_samples)
  points = means[modes] + std * rng.standard_normal((num_samples, means.shape[1]))
  return points.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Mixture:
  """The mixture's parameters with its fixed training and held-out evaluation sets."""

  means: np.ndarray
  std: float
  train: np.ndarray
  eval: np.ndarray

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Mixture":
    c = config.mixture
    means = mixture_means(c.modes_per_axis, c.spacing)
    # The data seed is separate from the training seed: runs with different seeds
    # (the benchmark's 10 runs) train on the same data set, as in the paper.
    rng = np.random.default_rng(c.data_seed)
    train = sample_mixture(rng, c.num_train, means, c.std)
    evaluation = sample_mixture(rng, c.num_eval, means, c.std)
    return cls(means=means, std=c.std, train=train, eval=evaluation)

  def train_batches(self, batch_size: int, seed: int, start_step: int = 0,
                    process_index: int | None = None,
                    process_count: int | None = None) -> Iterator[np.ndarray]:
    """Yields this process's rows of the global batch of each step from `start_step` on.

    Every epoch is a fresh permutation of the training set drawn from (seed, epoch); the
    last incomplete batch of an epoch is dropped.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    local = batch_size // process_count
    steps_per_epoch = len(self.train) // batch_size  # >= 1: checked by validate_config.
    epoch, order = -1, None
    step = start_step
    while True:
      if step // steps_per_epoch != epoch:
        epoch = step // steps_per_epoch
        order = np.random.default_rng([seed, epoch]).permutation(len(self.train))
      start = (step % steps_per_epoch) * batch_size + process_index * local
      yield self.train[order[start:start + local]]
      step += 1
