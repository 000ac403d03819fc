"""The evaluation suite of a BigBiGAN on an image dataset: what training runs periodically
(`config.eval_metrics`) and `python -m bigbigan.evaluate` runs on a checkpoint.

Metrics, all with the EMA weights and their standing BatchNorm statistics (standing_stats.py):
  linear_probe  the paper's protocol on each of `config.eval_features` (streaming_probe.py):
                a logistic regression fitted on `probe_train_split`, early-stopped on
                `probe_train_val_split` (the paper's 10,000 held-out training images),
                top-1 and top-5 on `eval_split`. Features are computed once and held in
                memory with `config.probe_in_memory` (small datasets), otherwise recomputed
                by the sharded encoder on every pass (ImageNet: 1.28M x 16,384 floats do
                not fit in memory).
  knn           k-NN accuracy (k in `config.knn_ks`, cosine) of `eval_split` against the
                labelled `knn_train_split` (held in host memory), and of the held-out
                `probe_train_val_split` (`knn_1_train_val_accuracy_cosine`: the default
                `selection_metric` by which the best checkpoint is kept).
  fid, is       FID and Inception Score of `config.fid_samples` samples G(z), with
                pytorch-fid's Inception (`config.inception_weights`); FID against the same
                number of real images of `fid_reference_split`, whose statistics are cached
                in the workdir.
  reports       figures, as PNGs in the workdir and as TensorBoard images: x | G(z) |
                G(E(x)), latent interpolations between pairs of real images, and the nearest
                neighbours of query images in feature space.
The headline feature's probe and 1-NN are also measured for the encoder at its random
initialisation (once per evaluator): the reference that learned features must beat.

A metric that cannot run (no Inception weights) is reported in `errors` with a one-line
reason; the others still run.
"""

import functools
from typing import Callable, Iterator, Optional, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from jax.sharding import Mesh

from bigbigan import bigbigan_steps
from bigbigan import progress
from bigbigan import sharding
from bigbigan.data import images as data_images
from bigbigan.data import pipeline
from bigbigan.evaluation import fid as fid_lib
from bigbigan.evaluation import inception
from bigbigan.evaluation import plots
from bigbigan.evaluation import streaming_probe
from bigbigan.evaluation import torch_weights
from bigbigan.evaluation.knn import knn_accuracy
from bigbigan.evaluation.representation import compute_features
from bigbigan.models.networks import Networks
from bigbigan.state import TrainState
from bigbigan.steps import sample_prior

METRICS = ("linear_probe", "knn", "fid", "is", "reports")
# The probe's validation top-1 and the cosine 1-NN of the first feature; the 1-NN on the
# held-out training images (train_val) is what checkpoints are selected by.
HEADLINE_METRICS = ("linear_accuracy", "knn_1_accuracy_cosine")
SELECTION_METRICS = ("knn_1_train_val_accuracy_cosine",)
GRID_IMAGES = 64
GRID_COLUMNS = 8
INTERPOLATION_PAIRS = 8
INTERPOLATION_STEPS = 8  # Latents between (and including) E(x_a) and E(x_b).
NEIGHBOUR_QUERIES = 8
NEIGHBOURS = 7


class MetricUnavailable(Exception):
  """A metric cannot run (e.g. no Inception weights); the message says why and the fix."""


def _to_unit_range(images) -> np.ndarray:
  """[-1, 1] -> [0, 1], for figures."""
  return (np.asarray(images, np.float32) + 1.0) / 2.0


class ImageEvaluator:
  """Call with (state, step) for a dict of scalar metrics and [1, H, W, 3] report images
  (keys "report/<name>"); process 0 also writes the reports as PNGs in `workdir`.

  Args:
    config: the run's config.
    networks: its networks.
    mesh: the device mesh.
    workdir: where figures and the FID reference statistics go.
    preprocess: the evaluation preprocessing (images at E's resolution).
    initial_state: returns the run's state at initialisation (for the random-init reference).
    metrics: the metrics to compute (default `config.eval_metrics`).
  """

  def __init__(self, config: ml_collections.ConfigDict, networks: Networks, mesh: Mesh,
               workdir: str, preprocess: pipeline.Preprocess,
               initial_state: Callable[[], TrainState], metrics: Optional[Sequence[str]] = None):
    self._config = config
    self._mesh = mesh
    self._workdir = workdir
    self._preprocess = preprocess
    self._initial_state = initial_state
    self.metrics = tuple(config.eval_metrics if metrics is None else metrics)
    unknown = set(self.metrics) - set(METRICS)
    if unknown:
      raise ValueError(f"unknown metrics {sorted(unknown)}: allowed {METRICS}")
    self._fns = bigbigan_steps.make_bigbigan_inference_fns(config, networks, mesh)
    self._has_encoder = "encode" in self._fns
    self._normalise = jax.jit(bigbigan_steps.normalise_images)
    self._random_init_metrics = None
    self._inception = None
    # The probe's classes: the labels of the dataset (10 for MNIST, 1,000 for ImageNet).
    features = pipeline.prepared_builder(config.dataset, config.data_dir).info.features
    self._num_classes = features["label"].num_classes if "label" in features else None
    self.errors: dict[str, str] = {}  # Metric -> why it did not run, for the last call.
    self._latents = None  # The sample grid's, drawn at the first report.

  # ---- Data and features. ----

  def _image_batches(self, split: str) -> Iterator[dict]:
    c = self._config
    return pipeline.eval_batches(c.dataset, split, c.eval_batch_size, self._preprocess,
                                 c.data_dir)

  def _feature_fn(self, state: TrainState, names: Sequence[str]):
    def features(images):
      outputs = self._fns["encode"](state, self._normalise(images))
      return {name: outputs[name] for name in names}
    return features

  def _features(self, state: TrainState, split: str, names: Sequence[str]):
    """({name: [N, D]}, [N] labels) of `split`, in host memory."""
    c = self._config
    return compute_features(self._feature_fn(state, names), self._image_batches(split),
                            self._mesh, what=f"features of {split}",
                            total=pipeline.num_examples(c.dataset, split, c.data_dir))

  # ---- Representation metrics. ----

  def _linear_probe(self, state: TrainState, names: Sequence[str], cache: dict) -> dict:
    c = self._config
    splits = (c.probe_train_split, c.probe_train_val_split, c.eval_split)
    options = dict(epochs=c.probe_epochs, learning_rate=c.probe_learning_rate,
                   patience=c.probe_patience or None)
    metrics = {}
    for name in names:
      if c.probe_in_memory:
        data = [self._cached_features(state, split, names, cache) for split in splits]
        result = streaming_probe.train_linear_probe_in_memory(
            *[(features[name], labels) for features, labels in data], self._num_classes,
            self._mesh, batch_size=c.eval_batch_size, seed=c.seed, **options)
      else:
        # Not jitted again: `encode` is, and a jit here would embed the state as constants.
        fn = lambda images, name=name: self._feature_fn(state, [name])(images)[name]
        streams = [streaming_probe.feature_batches(
            functools.partial(self._image_batches, split), fn, self._mesh) for split in splits]
        result = streaming_probe.train_linear_probe(*streams, self._num_classes,
                                                    self._mesh, **options)
      metrics.update({f"linear_accuracy_{name}": result.validation_top1,
                      f"linear_top5_accuracy_{name}": result.validation_top5,
                      f"linear_train_val_accuracy_{name}": max(result.train_val_top1),
                      f"linear_best_epoch_{name}": result.best_epoch})
    return metrics

  def _cached_features(self, state: TrainState, split: str, names: Sequence[str],
                       cache: dict):
    """Features of `split`, computed once per evaluation (splits recur across metrics)."""
    if split not in cache:
      cache[split] = self._features(state, split, names)
    return cache[split]

  def _knn(self, state: TrainState, names: Sequence[str], cache: dict) -> dict:
    """k-NN accuracies on eval_split and, to select checkpoints by, on the held-out
    probe_train_val_split (`knn_{k}_train_val_accuracy_cosine_{name}`)."""
    c = self._config
    train_features, train_labels = self._cached_features(state, c.knn_train_split, names,
                                                         cache)
    metrics = {}
    for split, infix in ((c.eval_split, ""), (c.probe_train_val_split, "train_val_")):
      test_features, test_labels = self._cached_features(state, split, names, cache)
      for name in names:
        accuracies = knn_accuracy(train_features[name], train_labels, test_features[name],
                                  test_labels, self._mesh, ks=tuple(c.knn_ks),
                                  metric="cosine")
        metrics.update({f"knn_{k}_{infix}accuracy_cosine_{name}": accuracy
                        for k, accuracy in accuracies.items()})
    return metrics

  def _representation(self, state: TrainState, names: Sequence[str]) -> dict:
    if self._num_classes is None:
      raise MetricUnavailable(f"{self._config.dataset} has no class labels: the linear probe "
                              "and k-NN need a labelled dataset")
    cache: dict = {}
    metrics = {}
    if "linear_probe" in self.metrics:
      metrics.update(self._linear_probe(state, names, cache))
    if "knn" in self.metrics:
      metrics.update(self._knn(state, names, cache))
    return metrics

  def _random_init(self) -> dict[str, float]:
    """The headline feature's metrics for the encoder at initialisation (once)."""
    if self._random_init_metrics is None:
      headline = self._config.eval_features[0]
      found = self._representation(self._initial_state(), [headline])
      self._random_init_metrics = {
          f"{metric}_random_init": found[f"{metric}_{headline}"]
          for metric in HEADLINE_METRICS if f"{metric}_{headline}" in found}
    return self._random_init_metrics

  # ---- FID and IS. ----

  def _inception_fn(self):
    if self._inception is None:
      path = self._config.inception_weights
      if not path:
        raise MetricUnavailable(
            "config.inception_weights is empty: download pytorch-fid's weights "
            f"({inception.FID_WEIGHTS_URL}) and set --config.inception_weights=PATH")
      try:
        variables = torch_weights.load_fid_inception(path)
      except (FileNotFoundError, ValueError) as error:
        raise MetricUnavailable(str(error)) from error
      variables = jax.device_put(variables, sharding.replicated(self._mesh))
      batch = sharding.batch_sharded(self._mesh)
      apply = jax.jit(lambda v, x: inception.FIDInceptionV3().apply(v, x),
                      in_shardings=(sharding.replicated(self._mesh), batch),
                      out_shardings=batch)
      self._inception = functools.partial(apply, variables)
    return self._inception

  def _inception_outputs(self, images: Iterator[tuple[jax.Array, np.ndarray]], logits: bool,
                         what: str) -> tuple[fid_lib.FeatureStatistics, np.ndarray]:
    """Pool statistics (and the IS logits) of batches of ([B, H, W, 3] in [-1, 1], mask)
    (`what` they are, for the progress lines of the log)."""
    fn = self._inception_fn()
    statistics = fid_lib.FeatureStatistics(2048)
    all_logits = []
    for x, mask in progress.track(images, what, self._config.fid_samples,
                                  lambda batch: int(batch[1].sum())):
      outputs = fn(x)
      statistics.update(sharding.gather_rows(outputs["pool"]), mask)
      if logits:
        all_logits.append(sharding.gather_rows(outputs["logits_unbiased"])[mask])
    return statistics, (np.concatenate(all_logits) if logits else None)

  def _sample_batches(self, state: TrainState, count: int):
    c = self._config
    key = jax.random.PRNGKey(c.seed + 2)
    for start in range(0, count, c.eval_batch_size):
      z = sample_prior(jax.random.fold_in(key, start), (c.eval_batch_size, c.latent_dim),
                       c.latent_prior)
      mask = np.arange(start, start + c.eval_batch_size) < count
      yield self._fns["generate"](state, sharding.from_host_array(np.asarray(z),
                                                                  self._mesh)), mask

  def _real_batches(self, count: int):
    seen = 0
    for batch in self._image_batches(self._config.fid_reference_split):
      mask = sharding.gather_rows(sharding.to_global_batch(batch["mask"], self._mesh))
      mask = mask.astype(bool) & (np.cumsum(mask) + seen <= count)
      x = self._normalise(sharding.to_global_batch(batch["image"], self._mesh))
      yield bigbigan_steps.to_discriminator_resolution(x, self._config.resolution), mask
      seen += int(mask.sum())
      if seen >= count:
        break

  def _reference_statistics(self) -> tuple[np.ndarray, np.ndarray]:
    """Real images' pool mean and covariance, cached in the workdir under a key of all they
    depend on: the Inception weights' bytes, the dataset and its version, the split, the
    count and the preprocessing (every process computes them if the cache has none)."""
    c = self._config
    try:
      weights_sha256 = fid_lib.file_sha256(c.inception_weights)
    except FileNotFoundError as error:
      raise MetricUnavailable(f"FID Inception weights not found at {c.inception_weights!r}; "
                              f"download them from {inception.FID_WEIGHTS_URL}") from error
    dataset = pipeline.prepared_builder(c.dataset, c.data_dir).info.full_name
    preprocessing = {
        # data/images.py's framing of the dataset, in its evaluation (deterministic) form.
        "framing": data_images.FRAMING[data_images.dataset_family(c.dataset)][0],
        # The preprocessed images' size: E's input, or G's output without an encoder (as
        # tasks.ImageTask builds `preprocess`).
        "image_resolution": (c.encoder.resolution if c.encoder.kind != "none"
                             else c.resolution),
        # Average-pooled 2x2 down to what D sees (to_discriminator_resolution).
        "discriminator_resolution": c.resolution,
        "inception_input": inception.INPUT_SIZE,
    }
    key = fid_lib.reference_statistics_key(weights_sha256, dataset, c.fid_reference_split,
                                           c.fid_samples, preprocessing)

    def compute():
      statistics, _ = self._inception_outputs(self._real_batches(c.fid_samples), logits=False,
                                              what="FID reference images")
      return statistics.mean, statistics.covariance

    return fid_lib.cached_reference_statistics(self._workdir, key, compute,
                                               write=jax.process_index() == 0)

  def _fid_and_is(self, state: TrainState) -> dict[str, float]:
    c = self._config
    want_is = "is" in self.metrics
    samples, logits = self._inception_outputs(self._sample_batches(state, c.fid_samples),
                                              logits=want_is, what="FID samples")
    metrics = {}
    if "fid" in self.metrics:
      mean, covariance = self._reference_statistics()
      metrics["fid"] = fid_lib.frechet_distance(samples.mean, samples.covariance, mean,
                                                covariance)
    if want_is:
      metrics["inception_score"], metrics["inception_score_std"] = (
          fid_lib.inception_score(logits))
    return metrics

  # ---- Reports. ----

  def _reports(self, state: TrainState) -> dict[str, np.ndarray]:
    """{figure name: [N, H, W, 3] images in [0, 1], or a mosaic} at G's resolution."""
    c = self._config
    if self._latents is None:
      latents = sample_prior(jax.random.PRNGKey(c.seed + 1), (GRID_IMAGES, c.latent_dim),
                             c.latent_prior)
      self._latents = sharding.from_host_array(np.asarray(latents), self._mesh)
    grids = {"samples G(z)": self._fns["generate"](state, self._latents)}
    if not self._has_encoder:
      return {"samples": {"samples G(z)": grids["samples G(z)"]}}
    batch = next(self._image_batches(c.eval_split))
    x = self._normalise(sharding.to_global_batch(batch["image"], self._mesh))
    encoded = self._fns["encode"](state, x)
    reconstructions = self._fns["generate"](state, encoded["z_mean"])
    x_small = bigbigan_steps.to_discriminator_resolution(x, c.resolution)
    figures = {"reconstructions": {"data x": x_small, **grids,
                                   "reconstructions G(E(x))": reconstructions}}
    figures["interpolations"] = {"G(lerp(E(x_a), E(x_b)))": self._interpolations(
        state, x_small, sharding.gather_rows(encoded["z_mean"]))}
    name = c.eval_features[0]
    figures["neighbours"] = {f"queries and nearest by {name}": self._neighbours(
        state, sharding.gather_rows(x_small)[:NEIGHBOUR_QUERIES],
        sharding.gather_rows(encoded[name])[:NEIGHBOUR_QUERIES])}
    return figures

  def _interpolations(self, state: TrainState, x: jax.Array, z: np.ndarray) -> np.ndarray:
    """Rows of x_a, G at INTERPOLATION_STEPS latents from E(x_a) to E(x_b), x_b."""
    pairs = min(INTERPOLATION_PAIRS, len(z) // 2)
    weights = np.linspace(0.0, 1.0, INTERPOLATION_STEPS)[None, :, None]
    z_a, z_b = z[:pairs, None], z[pairs:2 * pairs, None]
    latents = ((1 - weights) * z_a + weights * z_b).reshape(-1, z.shape[1])
    generated = sharding.gather_rows(self._fns["generate"](
        state, sharding.from_host_array(latents.astype(np.float32), self._mesh)),
        len(latents)).reshape((pairs, INTERPOLATION_STEPS) + x.shape[1:])
    x = sharding.gather_rows(x)
    rows = np.concatenate([x[:pairs, None], generated, x[pairs:2 * pairs, None]], axis=1)
    return rows.reshape((-1,) + x.shape[1:])

  def _neighbours(self, state: TrainState, queries: np.ndarray,
                  query_features: np.ndarray) -> np.ndarray:
    """Rows of a query image and its NEIGHBOURS nearest (cosine, exact on the host) among
    the first `config.report_neighbour_pool` images of `knn_train_split`."""
    c = self._config
    name = c.eval_features[0]
    pool_images, pool_features, pooled = [], [], 0
    for batch in self._image_batches(c.knn_train_split):
      x = self._normalise(sharding.to_global_batch(batch["image"], self._mesh))
      mask = sharding.gather_rows(sharding.to_global_batch(batch["mask"], self._mesh))
      mask = mask.astype(bool)
      pool_features.append(sharding.gather_rows(self._fns["encode"](state, x)[name])[mask])
      pool_images.append(sharding.gather_rows(
          bigbigan_steps.to_discriminator_resolution(x, c.resolution))[mask])
      pooled += int(mask.sum())
      if pooled >= c.report_neighbour_pool:
        break
    pool = np.concatenate(pool_features)[:c.report_neighbour_pool]
    images = np.concatenate(pool_images)[:len(pool)]
    order = np.argsort(-_cosine(query_features, pool), axis=1, kind="stable")[:, :NEIGHBOURS]
    rows = np.concatenate([queries[:, None], images[order]], axis=1)
    return rows.reshape((-1,) + images.shape[1:])

  def _write_reports(self, figures: dict, step: int, title: str) -> dict[str, np.ndarray]:
    """PNGs on process 0; returns {"report/<figure>": [1, H, W, 3]} for TensorBoard."""
    images = {}
    for figure, grids in figures.items():
      grids = {name: _to_unit_range(sharding.gather_rows(v, GRID_IMAGES)
                                    if isinstance(v, jax.Array) else v)
               for name, v in grids.items()}
      columns = {"interpolations": INTERPOLATION_STEPS + 2,
                 "neighbours": NEIGHBOURS + 1}.get(figure, GRID_COLUMNS)
      if jax.process_index() == 0:
        plots.save_image_grids(epath.Path(self._workdir) / f"{figure}_{step:07d}.png",
                               grids, f"step {step}: {title}", columns=columns)
      for name, grid in grids.items():
        images[f"report/{figure}/{name}"] = plots.image_mosaic(grid, columns)[None]
    return images

  # ---- The suite. ----

  def _unavailable(self, metrics: set, error: Exception) -> None:
    for metric in sorted(metrics):
      self.errors[metric] = str(error)
    logging.error("Not computed: %s: %s", ", ".join(sorted(metrics)), error)

  def __call__(self, state: TrainState, step: int) -> dict:
    metrics, self.errors = {}, {}
    representation = {"linear_probe", "knn"} & set(self.metrics)
    if self._has_encoder and representation:
      try:
        metrics.update(self._random_init())
        found = self._representation(state, self._config.eval_features)
      except MetricUnavailable as error:
        self._unavailable(representation, error)
        found = {}
      metrics.update(found)
      headline = self._config.eval_features[0]
      metrics.update({metric: found[f"{metric}_{headline}"]
                      for metric in HEADLINE_METRICS + SELECTION_METRICS
                      if f"{metric}_{headline}" in found})
    if {"fid", "is"} & set(self.metrics):
      try:
        metrics.update(self._fid_and_is(state))
      except MetricUnavailable as error:
        self._unavailable({"fid", "is"} & set(self.metrics), error)
    if "reports" in self.metrics:
      accuracy = metrics.get("linear_accuracy", metrics.get("knn_1_accuracy_cosine"))
      title = "" if accuracy is None else f"{100 * accuracy:.2f}% ({_headline_name(metrics)})"
      metrics.update(self._write_reports(self._reports(state), step, title))
    return metrics


def _headline_name(metrics: dict) -> str:
  return "linear probe" if "linear_accuracy" in metrics else "1-NN"


def _cosine(queries: np.ndarray, pool: np.ndarray) -> np.ndarray:
  normalise = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
  return normalise(np.asarray(queries, np.float64)) @ normalise(
      np.asarray(pool, np.float64)).T
