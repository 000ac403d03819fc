"""Frechet Inception Distance and Inception Score from Inception outputs, in float64 NumPy.

FID compares two Gaussians fitted to Inception pool features (mean and covariance of each
set); IS scores one set of class logits by how confident and how varied its predictions
are. Features come off the device batch by batch, so `FeatureStatistics` folds each batch
into running float64 moments on the host: 50,000 x 2048 features never need to be held at
once, and the result equals the one-shot np.mean / np.cov. The formulas follow the
reference FID code (TTUR, pytorch-fid) and the original Inception Score code, so numbers
are comparable with published ones when the features come from the same network
(`bigbigan.evaluation.inception`).
"""

import numpy as np
import scipy.linalg
import scipy.special


class FeatureStatistics:
  """Running mean and covariance of feature rows, merged batch by batch in float64.

  Each batch is centred on its own mean and merged with the pairwise formula of Chan et
  al., which avoids the cancellation of a raw sum-of-squares when means are large next to
  standard deviations.
  """

  def __init__(self, num_features: int):
    self.num_features = num_features
    self.count = 0
    self._mean = np.zeros(num_features, np.float64)
    # Sum over rows of outer((x - mean), (x - mean)).
    self._centred_scatter = np.zeros((num_features, num_features), np.float64)

  def update(self, features, mask=None) -> None:
    """Adds a batch of rows.

    Args:
      features: [B, num_features] features of one batch (any float dtype, any array type
        NumPy can read).
      mask: optional [B] array; rows where it is 0/False are padding and are skipped, so a
        padded last evaluation batch can be passed as is.
    """
    batch = np.asarray(features, np.float64)
    if batch.ndim != 2 or batch.shape[1] != self.num_features:
      raise ValueError(f"features of shape {batch.shape}: expected [B, {self.num_features}]")
    if mask is not None:
      batch = batch[np.asarray(mask).astype(bool).reshape(-1)]
    batch_count = len(batch)
    if batch_count == 0:
      return
    batch_mean = batch.mean(axis=0)
    centred = batch - batch_mean
    batch_scatter = centred.T @ centred
    total = self.count + batch_count
    delta = batch_mean - self._mean
    self._centred_scatter += batch_scatter + np.outer(delta, delta) * (
        self.count * batch_count / total)
    self._mean += delta * (batch_count / total)
    self.count = total

  @property
  def mean(self) -> np.ndarray:
    """[num_features] float64 mean of all rows added so far."""
    return self._mean.copy()

  @property
  def covariance(self) -> np.ndarray:
    """[num_features, num_features] float64 unbiased covariance, as np.cov(rowvar=False)."""
    if self.count < 2:
      raise ValueError(f"covariance needs at least 2 rows, got {self.count}")
    return self._centred_scatter / (self.count - 1)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

  ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

  Args:
    mu1, mu2: [D] means.
    sigma1, sigma2: [D, D] covariances.
    eps: if the matrix square root of sigma1 sigma2 is not finite (the product is
      singular, e.g. fewer samples than dimensions), it is recomputed with eps * I added
      to both covariances, as the reference FID code does.

  Returns:
    The distance (FID when the arguments are Inception pool statistics).
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  dim = len(mu1)
  if mu2.shape != (dim,) or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
    raise ValueError(f"shapes do not match: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
                     f"mu2 {mu2.shape}, sigma2 {sigma2.shape}")
  diff = mu1 - mu2
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    offset = np.eye(dim) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  # The product of two covariances has a real, non-negative spectrum; rounding can still
  # give sqrtm a tiny imaginary part, which is dropped. A large one means bad inputs.
  if np.iscomplexobj(covmean):
    largest_imaginary = np.max(np.abs(np.diagonal(covmean).imag))
    if largest_imaginary > 1e-3:
      raise ValueError(f"sqrtm(sigma1 sigma2) has an imaginary part of {largest_imaginary:g}; "
                       "are both matrices covariances?")
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
  """Inception Score: exp(E_x KL(p(y|x) || p(y))), averaged over `splits` chunks.

  As in the original IS code, the rows are cut into `splits` contiguous chunks (in the
  given order), p(y) is the mean prediction within a chunk, and the result is the mean and
  the (population) standard deviation of the per-chunk scores. Computed in float64 from
  log-probabilities, so saturated softmax outputs give no log(0).

  Args:
    logits: [N, C] class logits; for numbers comparable with the literature, the 1008-way
      `logits_unbiased` of `bigbigan.evaluation.inception.FIDInceptionV3` (see there).
    splits: number of chunks (10 by convention; N >= splits).

  Returns:
    (mean, standard deviation) of the per-chunk scores.
  """
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2 or len(logits) < splits:
    raise ValueError(f"logits of shape {logits.shape}: expected [N >= {splits}, C]")
  log_probs = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
  count = len(log_probs)
  scores = []
  for split in range(splits):
    chunk = log_probs[split * count // splits:(split + 1) * count // splits]
    log_marginal = scipy.special.logsumexp(chunk, axis=0) - np.log(len(chunk))
    kl_per_row = np.sum(np.exp(chunk) * (chunk - log_marginal), axis=1)
    scores.append(np.exp(np.mean(kl_per_row)))
  return float(np.mean(scores)), float(np.std(scores))
