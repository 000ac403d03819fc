"""The generator's samples on an image dataset: `fid` and `is`.

FID and Inception Score of `config.fid_samples` samples G(z), with pytorch-fid's Inception
(`config.inception_weights`); FID against the same number of real images of
`fid_reference_split`, whose statistics are cached in the workdir. The two evaluators share
one pass of the samples through Inception per evaluation.

BigGAN's truncation trick: for each threshold T of `config.fid_truncations`, the same
metrics of `config.fid_samples` samples whose z is drawn from the prior conditioned on
|z_i| <= T (`sample_prior`), named by `metric_name` (`fid_truncation_0.5`,
`inception_score_truncation_0.5`, `inception_score_std_truncation_0.5`). Every threshold
draws z from the same keys as the untruncated samples (for the uniform prior, T >= 1 gives
exactly those samples), has its own Inception pass shared by the two evaluators, and is
compared with the same real images' statistics.
"""

import functools
from typing import Iterator, Optional

import jax
import numpy as np

from bigbigan import progress
from bigbigan import sharding
from bigbigan.data import images as data_images
from bigbigan.data import pipeline
from bigbigan.evaluation import fid as fid_lib
from bigbigan.evaluation import inception
from bigbigan.evaluation import torch_weights
from bigbigan.evaluation.context import EvaluationContext, MetricUnavailable
from bigbigan.families.common import PredictFns, to_discriminator_resolution
from bigbigan.state import TrainState


# Joins a metric's name to the threshold of the truncation trick that its samples used.
TRUNCATION_INFIX = "_truncation_"


def metric_name(base: str, truncation: Optional[float] = None) -> str:
  """`base` ("fid", "inception_score", "inception_score_std") of samples truncated at
  `truncation` (None: untruncated, `base` itself): e.g. "fid_truncation_0.5"; the threshold
  is written with "g" (1.0 -> "1", 0.25 -> "0.25")."""
  return base if truncation is None else f"{base}{TRUNCATION_INFIX}{truncation:g}"


def _truncations(config) -> tuple[float, ...]:
  # Run configs written before the field existed have none.
  return tuple(config.get("fid_truncations", ()))


class _InceptionOutputs:
  """pytorch-fid's Inception on batches of images, and the samples' outputs, shared by the
  two evaluators (one instance per run, in the context)."""

  def __init__(self, context: EvaluationContext):
    self._context = context
    self._config = context.config
    self._inception = None

  def _inception_fn(self):
    if self._inception is None:
      path, mesh = self._config.inception_weights, self._context.mesh
      if not path:
        raise MetricUnavailable(
            "config.inception_weights is empty: download pytorch-fid's weights "
            f"({inception.FID_WEIGHTS_URL}) and set --config.inception_weights=PATH")
      try:
        variables = torch_weights.load_fid_inception(path)
      except (FileNotFoundError, ValueError) as error:
        raise MetricUnavailable(str(error)) from error
      variables = jax.device_put(variables, sharding.replicated(mesh))
      apply = jax.jit(lambda v, x: inception.FIDInceptionV3().apply(v, x),
                      in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                      out_shardings=sharding.batch_sharded(mesh))
      self._inception = functools.partial(apply, variables)
    return self._inception

  def outputs(self, images: Iterator[tuple[jax.Array, np.ndarray]], what: str,
              logits: bool = False) -> tuple[fid_lib.FeatureStatistics, np.ndarray]:
    """Pool statistics (and, with `logits`, the IS logits, else None) of batches of
    ([B, H, W, 3] in [-1, 1], mask) (`what` they are, for the progress lines of the log)."""
    fn = self._inception_fn()
    statistics = None
    all_logits = []
    for x, mask in progress.track(images, what, self._config.fid_samples,
                                  lambda batch: int(batch[1].sum())):
      outputs = fn(x)
      pool = sharding.gather_rows(outputs["pool"])
      if statistics is None:
        # As wide as the network's pool features: 2048 for Inception.
        statistics = fid_lib.FeatureStatistics(pool.shape[1])
      statistics.update(pool, mask)
      if logits:
        all_logits.append(sharding.gather_rows(outputs["logits_unbiased"])[mask])
    if statistics is None:
      raise MetricUnavailable(f"no {what}: nothing to compute the statistics of")
    return statistics, (np.concatenate(all_logits) if logits else None)

  def _sample_batches(self, predict: PredictFns, state: TrainState, count: int,
                      truncation: Optional[float]):
    c = self._config
    # The same keys at every threshold: the truncated samples differ from the untruncated
    # ones by the threshold alone.
    key = jax.random.PRNGKey(c.seed + 2)
    for start in range(0, count, c.eval_batch_size):
      z = predict.sample_latents(jax.random.fold_in(key, start), c.eval_batch_size,
                                 truncation=truncation)
      mask = np.arange(start, start + c.eval_batch_size) < count
      yield predict.generate(state, sharding.from_host_array(z, self._context.mesh)), mask

  def samples(self, predict: PredictFns, state: TrainState, logits: bool = False,
              truncation: Optional[float] = None):
    """(pool statistics, logits or None) of `config.fid_samples` samples, with z truncated
    at `truncation` (None: untruncated), once per evaluation and threshold: the first
    caller's pass serves both evaluators (the registry runs IS, which asks for the logits,
    before FID)."""
    what = "FID samples" + ("" if truncation is None else f" (truncation {truncation:g})")
    return self._context.once_per_round(("inception_samples", truncation), lambda: self.outputs(
        self._sample_batches(predict, state, self._config.fid_samples, truncation), what,
        logits))


def _shared_inception(context: EvaluationContext) -> _InceptionOutputs:
  # One per run: built by whichever of the two evaluators comes first.
  key = "_inception_outputs"
  if key not in context.run_wide:
    context.run_wide[key] = _InceptionOutputs(context)
  return context.run_wide[key]


class FrechetInceptionDistance:
  """The `fid` evaluator."""

  def __init__(self, context: EvaluationContext):
    self._context = context
    self._config = context.config
    self._inception = _shared_inception(context)

  def _real_batches(self, predict: PredictFns, count: int):
    mesh, seen = self._context.mesh, 0
    for batch in self._context.data.eval_batches(self._config.fid_reference_split):
      mask = sharding.gather_rows(sharding.to_global_batch(batch["mask"], mesh))
      mask = mask.astype(bool) & (np.cumsum(mask) + seen <= count)
      x = predict.normalise(sharding.to_global_batch(batch["image"], mesh))
      yield to_discriminator_resolution(x, self._config.resolution), mask
      seen += int(mask.sum())
      if seen >= count:
        break

  def _reference_statistics(self, predict: PredictFns) -> tuple[np.ndarray, np.ndarray]:
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
        # the family's ImageData builds its preprocessing).
        "image_resolution": (c.encoder.resolution if c.encoder.kind != "none"
                             else c.resolution),
        # Average-pooled 2x2 down to what D sees (to_discriminator_resolution).
        "discriminator_resolution": c.resolution,
        "inception_input": inception.INPUT_SIZE,
    }
    key = fid_lib.reference_statistics_key(weights_sha256, dataset, c.fid_reference_split,
                                           c.fid_samples, preprocessing)

    def compute():
      statistics, _ = self._inception.outputs(self._real_batches(predict, c.fid_samples),
                                              what="FID reference images")
      return statistics.mean, statistics.covariance

    return fid_lib.cached_reference_statistics(self._context.workdir, key, compute,
                                               write=jax.process_index() == 0)

  def run(self, predict: PredictFns, state: TrainState, step: int) -> dict:
    """`fid`, and `fid_truncation_T` for each threshold T of `config.fid_truncations`."""
    del step
    results, reference = {}, None
    for truncation in (None,) + _truncations(self._config):
      samples, _ = self._inception.samples(predict, state, truncation=truncation)
      if reference is None:
        # Once: the real images' statistics do not depend on the threshold.
        reference = self._reference_statistics(predict)
      results[metric_name("fid", truncation)] = fid_lib.frechet_distance(
          samples.mean, samples.covariance, *reference)
    return results


class InceptionScore:
  """The `is` evaluator: `inception_score` and `inception_score_std`."""

  def __init__(self, context: EvaluationContext):
    self._config = context.config
    self._inception = _shared_inception(context)

  def run(self, predict: PredictFns, state: TrainState, step: int) -> dict:
    """`inception_score` and `inception_score_std`, and their `_truncation_T` for each
    threshold T of `config.fid_truncations`."""
    del step
    results = {}
    for truncation in (None,) + _truncations(self._config):
      _, logits = self._inception.samples(predict, state, logits=True, truncation=truncation)
      score, std = fid_lib.inception_score(logits)
      results[metric_name("inception_score", truncation)] = score
      results[metric_name("inception_score_std", truncation)] = std
    return results
