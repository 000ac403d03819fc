"""FID, streaming feature statistics and Inception Score against float64 NumPy references."""

import types

import numpy as np
import pytest

from bigbigan.evaluation import fid
from bigbigan.evaluation.fid import FeatureStatistics, frechet_distance, inception_score


def _random_statistics(rng, num_rows, dim, shift=0.0):
  mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
  features = rng.standard_normal((num_rows, dim)) @ mixing + shift
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _reference_frechet_distance(mu1, sigma1, mu2, sigma2):
  """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)), without scipy's sqrtm.

  S1 S2 is similar to S1^(1/2) S2 S1^(1/2), which is symmetric positive semi-definite, so
  Tr sqrtm(S1 S2) is the sum of the square roots of that matrix's eigenvalues.
  """
  eigenvalues, eigenvectors = np.linalg.eigh(sigma1)
  sqrt_sigma1 = (eigenvectors * np.sqrt(np.maximum(eigenvalues, 0))) @ eigenvectors.T
  middle = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
  trace_sqrt = np.sum(np.sqrt(np.maximum(np.linalg.eigvalsh((middle + middle.T) / 2), 0)))
  return np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt


def test_identical_statistics_have_zero_distance():
  mu, sigma = _random_statistics(np.random.default_rng(0), 2000, 64)
  assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_distance_matches_float64_reference():
  rng = np.random.default_rng(1)
  mu1, sigma1 = _random_statistics(rng, 3000, 64)
  mu2, sigma2 = _random_statistics(rng, 2500, 64, shift=0.3)
  got = frechet_distance(mu1, sigma1, mu2, sigma2)
  want = _reference_frechet_distance(mu1, sigma1, mu2, sigma2)
  assert got > 1.0
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # One dimension: the distance is (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s.
  np.testing.assert_allclose(frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]), 4.0 + 1.0)


def test_singular_covariances_give_a_finite_distance(monkeypatch):
  # Fewer rows than dimensions: rank-deficient covariances, a singular product.
  rng = np.random.default_rng(2)
  mu1, sigma1 = _random_statistics(rng, 20, 64)
  mu2, sigma2 = _random_statistics(rng, 20, 64)
  want = _reference_frechet_distance(mu1, sigma1, mu2, sigma2)
  np.testing.assert_allclose(frechet_distance(mu1, sigma1, mu2, sigma2), want, rtol=1e-6)
  # Where sqrtm fails (non-finite), eps * I is added to both covariances inside the root.
  real_sqrtm = fid.scipy.linalg.sqrtm
  calls = []
  def failing_once(matrix):
    calls.append(matrix)
    return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)
  monkeypatch.setattr(fid.scipy.linalg, "sqrtm", failing_once)
  eps, offset = 1e-3, np.eye(64) * 1e-3
  got = frechet_distance(mu1, sigma1, mu2, sigma2, eps=eps)
  assert len(calls) == 2
  # The traces outside the root keep the unshifted covariances.
  want = _reference_frechet_distance(mu1, sigma1 + offset, mu2, sigma2 + offset) - 2 * 64 * eps
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_streaming_statistics_equal_one_shot_ones():
  rng = np.random.default_rng(3)
  # A large common offset: a raw sum of squares would lose digits to cancellation.
  features = (rng.standard_normal((265, 32)) * rng.uniform(0.1, 3, 32) + 100).astype(np.float32)
  statistics = FeatureStatistics(32)
  for start, stop in ((0, 100), (100, 137), (137, 201)):
    statistics.update(features[start:stop])
  # A padded last batch of 100 rows: the last 64 real ones, then garbage padding.
  padded = np.concatenate([features[201:], np.full((36, 32), 1e6, np.float32)])
  mask = np.arange(100) < 64
  statistics.update(padded, mask=mask)
  assert statistics.count == 265
  reference = features.astype(np.float64)
  np.testing.assert_allclose(statistics.mean, reference.mean(axis=0), rtol=1e-12)
  np.testing.assert_allclose(statistics.covariance, np.cov(reference, rowvar=False),
                             rtol=1e-9, atol=1e-12)


def test_streaming_statistics_reject_wrong_width():
  with pytest.raises(ValueError, match=r"expected \[B, 8\]"):
    FeatureStatistics(8).update(np.zeros((4, 7)))


def _reference_inception_score(logits, splits):
  """The original IS code's loop, on float64 softmax probabilities."""
  exp = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs = exp / exp.sum(axis=1, keepdims=True)
  scores = []
  for i in range(splits):
    part = probs[i * len(probs) // splits:(i + 1) * len(probs) // splits]
    kl = part * (np.log(part) - np.log(np.mean(part, axis=0, keepdims=True)))
    scores.append(np.exp(np.mean(np.sum(kl, axis=1))))
  return np.mean(scores), np.std(scores)


def test_inception_score_matches_numpy_reference():
  # 1003 rows: not a multiple of 10, so the chunk boundaries matter.
  logits = np.random.default_rng(4).standard_normal((1003, 1008)) * 3
  got_mean, got_std = inception_score(logits.astype(np.float32), splits=10)
  want_mean, want_std = _reference_inception_score(logits.astype(np.float32).astype(np.float64),
                                                   splits=10)
  np.testing.assert_allclose([got_mean, got_std], [want_mean, want_std], rtol=1e-10)


def test_inception_score_extremes():
  # Identical predictions: no information about x, score 1.
  mean, std = inception_score(np.tile(np.random.default_rng(5).standard_normal(20), (100, 1)))
  np.testing.assert_allclose([mean, std], [1.0, 0.0], atol=1e-9)
  # Confident predictions spread evenly over 10 classes: score 10.
  confident = 100.0 * np.eye(10)[np.arange(1000) % 10]
  np.testing.assert_allclose(inception_score(confident)[0], 10.0, rtol=1e-9)


# ---- The cache of FID's reference statistics. ----


def _replace_file(path, data: bytes) -> None:
  """Rewrites `path` as a download does: a new file renamed over the old one."""
  partial = path.with_name(path.name + ".partial")
  partial.write_bytes(data)
  partial.replace(path)


def test_file_sha256_is_the_digest_of_the_current_bytes(tmp_path):
  import hashlib  # pylint: disable=g-import-not-at-top
  weights = tmp_path / "weights.pth"
  weights.write_bytes(b"a" * 3_000_000)  # Several hashing blocks.
  assert fid.file_sha256(weights) == hashlib.sha256(b"a" * 3_000_000).hexdigest()
  assert fid.file_sha256(str(weights)) == fid.file_sha256(weights)  # Remembered.
  _replace_file(weights, b"b" * 3_000_000)
  assert fid.file_sha256(weights) == hashlib.sha256(b"b" * 3_000_000).hexdigest()
  with pytest.raises(FileNotFoundError):
    fid.file_sha256(tmp_path / "missing.pth")


def test_reference_statistics_are_cached_per_key(tmp_path):
  calls = []

  def compute():
    calls.append(1)
    rows = np.random.default_rng(len(calls)).standard_normal((10, 3))
    return rows.mean(axis=0), np.cov(rows, rowvar=False)

  base = dict(weights_sha256="0" * 64, dataset="mnist/3.0.1", split="test", count=100,
              preprocessing={"framing": "resize", "image_resolution": 32})
  mean, covariance = fid.cached_reference_statistics(
      tmp_path, fid.reference_statistics_key(**base), compute)
  again = fid.cached_reference_statistics(tmp_path, fid.reference_statistics_key(**base),
                                          compute)
  assert len(calls) == 1
  np.testing.assert_array_equal(again[0], mean)
  np.testing.assert_array_equal(again[1], covariance)
  changes = [dict(weights_sha256="1" * 64), dict(dataset="mnist/3.0.2"), dict(split="train"),
             dict(count=101), dict(preprocessing={"framing": "resize", "image_resolution": 64})]
  for change in changes:
    fid.cached_reference_statistics(tmp_path, fid.reference_statistics_key(**{**base, **change}),
                                     compute)
  assert len(calls) == 1 + len(changes)
  assert len(list(tmp_path.glob("fid_reference_*.npz"))) == 1 + len(changes)
  assert not list(tmp_path.glob("*.tmp-*"))
  # A process that does not write (not process 0) computes and leaves no file.
  fid.cached_reference_statistics(tmp_path, fid.reference_statistics_key(**{**base, "count": 7}),
                                  compute, write=False)
  assert len(calls) == 2 + len(changes)
  assert len(list(tmp_path.glob("fid_reference_*.npz"))) == 1 + len(changes)


def test_a_cache_file_of_another_key_is_recomputed(tmp_path):
  key = fid.reference_statistics_key("0" * 64, "mnist/3.0.1", "test", 100, {})
  path = fid.reference_statistics_path(tmp_path, key)
  np.savez(path, mean=np.zeros(2), covariance=np.eye(2), key=np.array("{}"))
  got = fid.cached_reference_statistics(tmp_path, key, lambda: (np.ones(2), 2 * np.eye(2)))
  np.testing.assert_array_equal(got[0], np.ones(2))
  with np.load(path) as cached:  # Overwritten with the right key.
    np.testing.assert_array_equal(cached["mean"], np.ones(2))


def test_the_evaluator_recomputes_when_weights_split_count_or_preprocessing_change(
    mnist_dir, tmp_path):
  """FrechetInceptionDistance.reference_statistics with a fake Inception: only a change of
  what the statistics depend on computes them again."""
  # pylint: disable=g-import-not-at-top
  from bigbigan.evaluation.context import EvaluationContext, MetricUnavailable
  from bigbigan.evaluation.image_generation import FrechetInceptionDistance
  # pylint: enable=g-import-not-at-top
  from mnist_mock import tiny_bigbigan_config  # pylint: disable=g-import-not-at-top
  weights = tmp_path / "weights.pth"
  weights.write_bytes(b"weights, version 1")
  workdir = tmp_path / "run"
  workdir.mkdir()
  computed = []

  def reference(**overrides):
    config = tiny_bigbigan_config(**{"data_dir": str(mnist_dir), "fid_samples": 11,
                                     "inception_weights": str(weights), **overrides})
    # A fresh evaluator each time, as a new training run or bigbigan.evaluate has; only the
    # parts reference_statistics uses, and an Inception that needs no weights.
    evaluator = FrechetInceptionDistance(EvaluationContext(
        config, mesh=None, workdir=str(workdir), data=None, initial_state=None))
    evaluator.real_batches = lambda predict, split, count: ("real images", split, count)

    def inception_outputs(batches, what, total):
      assert batches == ("real images", config.fid_reference_split, config.fid_samples) and what
      assert total == config.fid_samples
      computed.append(dict(overrides))
      statistics = fid.FeatureStatistics(4)
      statistics.update(np.random.default_rng(len(computed)).standard_normal((9, 4)))
      return statistics, None

    evaluator._inception = types.SimpleNamespace(outputs=inception_outputs,
                                                 weights_path=config.inception_weights)
    return evaluator.reference_statistics(predict=None)

  first = reference()
  np.testing.assert_array_equal(reference()[1], first[1])
  assert len(computed) == 1
  for overrides in ({"fid_reference_split": "train"}, {"fid_samples": 12},
                    {"encoder.resolution": 64}, {"resolution": 64, "encoder.resolution": 64}):
    reference(**overrides)
    reference(**overrides)
  assert len(computed) == 5
  _replace_file(weights, b"weights, version 2")
  reference()
  reference()
  assert len(computed) == 6
  assert len(list(workdir.glob("fid_reference_*.npz"))) == 6
  with pytest.raises(MetricUnavailable, match="FID Inception weights not found at"):
    reference(inception_weights=str(tmp_path / "missing.pth"))


def test_the_inception_score_refuses_weights_without_a_classifier(mnist_dir, tmp_path,
                                                                  monkeypatch):
  # pylint: disable=g-import-not-at-top
  from bigbigan.evaluation import image_generation, inception, inception_weights
  from bigbigan.evaluation.context import EvaluationContext, MetricUnavailable
  from mnist_mock import tiny_bigbigan_config
  # pylint: enable=g-import-not-at-top
  extractor = tmp_path / "default_1.pt"
  loaded = []

  def load(path):
    loaded.append(path)
    return inception_weights.InceptionWeights(
        {}, inception.FIDInceptionV3(classifier=False, inputs=inception.TF_2015_INPUTS),
        inception_weights.TORCHSCRIPT_SOURCE)

  monkeypatch.setattr(inception_weights, "load", load)
  config = tiny_bigbigan_config(data_dir=str(mnist_dir), inception_weights=str(extractor))
  context = EvaluationContext(config, mesh=None, workdir=str(tmp_path), data=None,
                              initial_state=None)
  with pytest.raises(MetricUnavailable, match=(
      r"default_1\.pt is the 2015 Inception's TorchScript feature extractor, without a "
      r"classifier: the Inception Score needs pytorch-fid's "
      r"pt_inception-2015-12-05-6726825d\.pth \(https://.*\); FID runs with either file$")):
    image_generation.InceptionScore(context).run(predict=None, state=None, step=0)
  assert loaded == [str(extractor)]
