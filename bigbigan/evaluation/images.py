"""Periodic evaluation of a BigBiGAN on an image dataset: the linear probe (and 1-NN) on the
EMA encoder's features beside the same encoder at its random initialisation, and a figure
of real images x, samples G(z) and reconstructions G(E(x)).

The probe is fitted on `config.probe_train_split` and measured on `config.eval_split` (for
ImageNet, the paper's train_val: 10,000 training images held out of the probe's data).
Features are computed on all processes with the padded, masked evaluation iterator, then
held in host memory: this periodic probe is for splits of up to some 100,000 images.
"""

import itertools
import os
from typing import Callable, Optional, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from bigbigan import bigbigan_steps
from bigbigan import sharding
from bigbigan.data import pipeline
from bigbigan.evaluation import plots
from bigbigan.evaluation.representation import compute_features, representation_metrics
from bigbigan.models.networks import Networks
from bigbigan.state import TrainState
from bigbigan.steps import sample_prior

# The probe's accuracy and the cosine 1-NN's (cosine, as the k-NN of the evaluation suite).
HEADLINE_METRICS = ("linear_accuracy", "knn_1_accuracy_cosine")
GRID_IMAGES = 64
GRID_COLUMNS = 8


def _to_unit_range(images: np.ndarray) -> np.ndarray:
  """[-1, 1] -> [0, 1], for the figure."""
  return (np.asarray(images, np.float32) + 1.0) / 2.0


class ImageEvaluator:
  """Call with (state, step) for the metrics; on process 0 it also writes a figure.

  Metrics, for each name in `config.eval_features` (E's outputs, e.g. "avepool_feat"):
  `linear_accuracy_<name>` and `knn_1_accuracy_cosine_<name>`; the first feature's also as
  `linear_accuracy` and `knn_1_accuracy_cosine` (the headline), and as
  `linear_accuracy_random_init` and `knn_1_accuracy_cosine_random_init` for the encoder at
  its initialisation (computed once: the reference the learned features must beat). The
  probe's metrics only with `config.eval_linear_probe`. Without an encoder (a GAN) only the
  figure is made.
  """

  def __init__(self, config: ml_collections.ConfigDict, networks: Networks, mesh: Mesh,
               workdir: str, preprocess: pipeline.Preprocess,
               initial_state: Callable[[], TrainState]):
    self._config = config
    self._mesh = mesh
    self._workdir = workdir
    self._preprocess = preprocess
    self._initial_state = initial_state
    self._fns = bigbigan_steps.make_bigbigan_inference_fns(networks, mesh)
    self._normalise = jax.jit(bigbigan_steps.normalise_images)
    self._random_init_metrics = None
    latents = sample_prior(jax.random.PRNGKey(config.seed + 1),
                           (GRID_IMAGES, config.latent_dim), config.latent_prior)
    self._latents = sharding.from_host_array(np.asarray(latents), mesh)

  def _features(self, state: TrainState, split: str, names: Sequence[str],
                first_batch: Optional[list] = None):
    """E's features `names` of `split`, and its labels; appends the split's first batch to
    `first_batch` if given, so it is read only once."""
    c = self._config
    batches = pipeline.eval_batches(c.dataset, split, c.eval_batch_size, self._preprocess,
                                    c.data_dir)
    if first_batch is not None:
      first_batch.append(next(batches))
      batches = itertools.chain(first_batch, batches)

    def features(images):
      outputs = self._fns["encode"](state, self._normalise(images))
      return {name: outputs[name] for name in names}

    return compute_features(features, batches, self._mesh)

  def _probe(self, state: TrainState, names: Sequence[str],
             first_batch: Optional[list] = None) -> dict[str, float]:
    c = self._config
    return representation_metrics(self._features(state, c.probe_train_split, names),
                                  self._features(state, c.eval_split, names, first_batch),
                                  self._mesh, knn_metrics=("cosine",),
                                  probe=c.eval_linear_probe)

  def _random_init(self) -> dict[str, float]:
    """The headline feature's metrics for the encoder at initialisation (once per run)."""
    if self._random_init_metrics is None:
      headline = self._config.eval_features[0]
      found = self._probe(self._initial_state(), [headline])
      self._random_init_metrics = {
          f"{metric}_random_init": found[f"{metric}_{headline}"]
          for metric in HEADLINE_METRICS if f"{metric}_{headline}" in found}
    return self._random_init_metrics

  def __call__(self, state: TrainState, step: int) -> dict[str, float]:
    metrics = {}
    grids = {"samples G(z)": self._fns["generate"](state, self._latents)}
    if "encode" in self._fns:
      metrics.update(self._random_init())
      first_batch = []  # The evaluation split's, for the reconstructions.
      found = self._probe(state, self._config.eval_features, first_batch)
      metrics.update(found)
      headline = self._config.eval_features[0]
      metrics.update({metric: found[f"{metric}_{headline}"] for metric in HEADLINE_METRICS
                      if f"{metric}_{headline}" in found})
      # The first global evaluation batch (each process holds its own rows of it).
      x = self._normalise(sharding.to_global_batch(first_batch[0]["image"], self._mesh))
      reconstructions = self._fns["generate"](state, self._fns["encode"](state, x)["z_mean"])
      x = bigbigan_steps.to_discriminator_resolution(x, self._config.resolution)
      grids = {"data x": x, **grids, "reconstructions G(E(x))": reconstructions}
    # A collective: every process gathers, process 0 alone draws.
    images = {name: _to_unit_range(sharding.gather_rows(v, GRID_IMAGES))
              for name, v in grids.items()}
    if jax.process_index() == 0:
      accuracy = metrics.get("linear_accuracy", float("nan"))
      plots.save_image_grids(os.path.join(self._workdir, f"images_{step:07d}.png"), images,
                             f"step {step}: linear probe {100 * accuracy:.2f}%",
                             columns=GRID_COLUMNS)
    return metrics
