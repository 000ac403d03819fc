"""The logistic-regression probe against scikit-learn's fit of the same objective."""

import jax
import numpy as np
import pytest
from sklearn import linear_model as sklearn_linear_model

from bigbigan import sharding
from bigbigan.evaluation.linear_probe import fit_logistic_regression, linear_probe_accuracy


def _data(seed=0, n=300, d=6, classes=3, separation=1.5):
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((classes, d)) * separation
  labels = rng.integers(0, classes, n)
  return (centres[labels] + rng.standard_normal((n, d))).astype(np.float32), labels


@pytest.mark.parametrize("num_devices", [1, 8])
def test_fit_matches_sklearn(num_devices):
  x, y = _data()
  n, C = len(x), 0.5
  mesh = sharding.make_mesh(jax.devices()[:num_devices])
  ours = fit_logistic_regression(x, y, 3, mesh, l2=1.0 / (C * n), max_steps=1000,
                                 tolerance=1e-7)
  reference = sklearn_linear_model.LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(x, y)
  ours_logits = x @ ours["weights"] + ours["bias"]
  reference_logits = x @ reference.coef_.T + reference.intercept_
  # Softmax logits are defined up to a per-example constant: compare centred logits.
  centre = lambda z: z - z.mean(axis=1, keepdims=True)
  np.testing.assert_allclose(centre(ours_logits), centre(reference_logits), atol=2e-3)


def test_probe_accuracy_on_separable_and_random_labels():
  x, y = _data(seed=1, n=400, separation=4.0)
  mesh = sharding.make_mesh()
  assert linear_probe_accuracy(x[:300], y[:300], x[300:], y[300:], mesh) > 0.97
  shuffled = np.random.default_rng(2).permutation(y)
  assert linear_probe_accuracy(x[:300], shuffled[:300], x[300:], shuffled[300:], mesh) < 0.6
