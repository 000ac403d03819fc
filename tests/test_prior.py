"""The prior and BigGAN's truncation trick (families/common.sample_prior)."""

import jax
import numpy as np
import pytest
from scipy import stats

from bigbigan.families.common import sample_prior

KEY = jax.random.PRNGKey(0)
SHAPE = (20_000, 8)


@pytest.mark.parametrize("threshold", [0.5, 1.0, 2.0])
def test_truncated_normal_has_the_truncated_distributions_moments(threshold):
  """Resampled, not clipped: bounded by the threshold, with the variance of N(0, 1)
  conditioned on |z| <= t (scipy's truncnorm), which clipping (too much mass at +-t) and an
  untruncated draw both miss by far more than the tolerance."""
  z = np.asarray(sample_prior(KEY, SHAPE, "normal", threshold), np.float64)
  assert np.abs(z).max() <= threshold
  expected = stats.truncnorm(-threshold, threshold).var()
  np.testing.assert_allclose(z.var(), expected, rtol=0.02)
  # Clipping would pile mass on the bounds.
  assert np.mean(np.abs(z) > 0.999 * threshold) < 0.01


def test_uniform_prior_truncates_to_a_narrower_interval_and_not_at_one():
  untruncated = np.asarray(sample_prior(KEY, SHAPE, "uniform"))
  np.testing.assert_array_equal(np.asarray(sample_prior(KEY, SHAPE, "uniform", 1.0)),
                                untruncated)
  np.testing.assert_array_equal(np.asarray(sample_prior(KEY, SHAPE, "uniform", 3.0)),
                                untruncated)
  z = np.asarray(sample_prior(KEY, SHAPE, "uniform", 0.5), np.float64)
  assert np.abs(z).max() <= 0.5
  np.testing.assert_allclose(z.var(), 0.5**2 / 3, rtol=0.02)


def test_no_truncation_is_the_prior_itself():
  np.testing.assert_array_equal(np.asarray(sample_prior(KEY, (4, 3), "normal")),
                                np.asarray(jax.random.normal(KEY, (4, 3))))


@pytest.mark.parametrize("threshold", [0.0, -1.0, float("nan")])
def test_thresholds_must_be_positive(threshold):
  with pytest.raises(ValueError, match="must be a threshold > 0"):
    sample_prior(KEY, (2, 2), "normal", threshold)
