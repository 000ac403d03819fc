"""Frechet Inception Distance and Inception Score from Inception outputs, in float64 NumPy.

FID compares two Gaussians fitted to Inception pool features (mean and covariance of each
set); IS scores one set of class logits by how confident and how varied its predictions
are. Features come off the device batch by batch, so `FeatureStatistics` folds each batch
into running float64 moments on the host: 50,000 x 2048 features never need to be held at
once, and the result equals the one-shot np.mean / np.cov. The formulas follow the
reference FID code (TTUR, pytorch-fid) and the original Inception Score code, so numbers
are comparable with published ones when the features come from the same network
(`bigbigan.evaluation.inception`).

The real images' statistics (FID's reference) are costly, so they are cached in a file
whose name is a hash of everything they depend on (`reference_statistics_key`): the
Inception weights' bytes, the dataset, the split, the number of images and the
preprocessing. Changing any of them computes and caches new statistics.
"""

import functools
import hashlib
import io
import json
import os
from typing import Callable

import numpy as np
import scipy.linalg
import scipy.special
from etils import epath

from bigbigan import files

# Bump when the path of real images to the Inception changes in a way the key's parameters
# do not show: data/images.py's evaluation framing and resizing, the normalisation to
# [-1, 1], the 2x2 average pools to D's resolution (families/common.py), the resize to 299
# (inception.py). Cached statistics of an older version are then recomputed.
REFERENCE_PREPROCESSING_VERSION = 1
_HASH_BLOCK_BYTES = 1 << 20


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


# ---------------------------------------------------------------------------------------
# The cache of reference statistics.


def file_sha256(path: str | os.PathLike) -> str:
  """The SHA-256 hex digest of a file's bytes (local or e.g. gs://).

  The Inception weights are ~95 MB: the digest is computed once per file version (its path,
  size and modification time) and remembered for the process.

  Raises:
    FileNotFoundError: there is no such file.
  """
  path = epath.Path(path)
  if files.is_url(path):
    stat = path.stat()
    version = (stat.length, stat.mtime)
  else:
    # Nanoseconds and the inode: a file rewritten within the same second still differs.
    stat = os.stat(path)
    version = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
  return _sha256(os.fspath(path), version)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, version: tuple) -> str:
  del version  # Part of the cache key only.
  digest = hashlib.sha256()
  with epath.Path(path).open("rb") as f:
    for block in iter(lambda: f.read(_HASH_BLOCK_BYTES), b""):
      digest.update(block)
  return digest.hexdigest()


def reference_statistics_key(weights_sha256: str, dataset: str, split: str, count: int,
                             preprocessing: dict) -> dict:
  """Everything the real images' statistics depend on, as a JSON-serialisable dict.

  Args:
    weights_sha256: the Inception weights' `file_sha256`.
    dataset: the dataset's TFDS name, with its version (e.g. "mnist/3.0.1").
    split: the TFDS split the images are read from.
    count: the number of images.
    preprocessing: the parameters of the images' preprocessing (resolutions, framing);
      REFERENCE_PREPROCESSING_VERSION is added to them.
  """
  return {"inception_weights_sha256": weights_sha256, "dataset": dataset, "split": split,
          "count": int(count),
          "preprocessing": {"version": REFERENCE_PREPROCESSING_VERSION, **preprocessing}}


def reference_statistics_path(directory: str | os.PathLike, key: dict) -> epath.Path:
  """The cache file of `key`'s statistics in `directory`: fid_reference_<hash>.npz."""
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
  return epath.Path(directory) / f"fid_reference_{digest[:16]}.npz"


def cached_reference_statistics(directory: str | os.PathLike, key: dict,
                                compute: Callable[[], tuple[np.ndarray, np.ndarray]],
                                write: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """(mean, covariance) of `key` from its cache file in `directory`, or from `compute()`.

  Args:
    directory: where the cache files are (the workdir; local or e.g. gs://).
    key: `reference_statistics_key`; stored in the file too, and checked on reading.
    compute: returns (mean, covariance) when the cache has none for `key`.
    write: whether to write what `compute` returns (one process of a multi-process job
      writes; all of them compute, as the computation is collective).

  Returns:
    The float64 [D] mean and [D, D] covariance.
  """
  path = reference_statistics_path(directory, key)
  serialised = json.dumps(key, sort_keys=True)
  if path.exists():
    with np.load(io.BytesIO(path.read_bytes())) as cached:
      # The file name holds 64 bits of the key's hash; the stored key settles it.
      if str(cached["key"]) == serialised:
        return cached["mean"], cached["covariance"]
  mean, covariance = compute()
  if write:
    buffer = io.BytesIO()
    np.savez(buffer, mean=mean, covariance=covariance, key=np.array(serialised))
    files.write_whole(path, buffer.getvalue())
  return mean, covariance
