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


def test_probe_accuracy_is_exact_on_separable_and_on_uninformative_features():
  mesh = sharding.make_mesh()
  # Clusters 14 apart with noise 0.5: held-out points lie far inside their class's region
  # of any separating fit, so every one is right.
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, 200)
  x = (10.0 * np.eye(3, 6)[labels] + 0.5 * rng.standard_normal((200, 6))).astype(np.float32)
  assert linear_probe_accuracy(x[:150], labels[:150], x[150:], labels[150:], mesh) == 1.0
  # Features that say nothing (all equal): the fit is its bias alone, the log of the class
  # frequencies, so it predicts the most frequent training class (2, 6 of 12) for every test
  # example. 3 of the 10 test labels are 2 (and 1 is 0, the class an untrained probe's tied
  # logits would pick).
  train_labels = np.array([0, 1, 2, 2, 3, 2, 1, 2, 0, 2, 3, 2])
  test_labels = np.array([1, 2, 0, 3, 2, 1, 3, 2, 1, 3])
  constant = lambda n: np.full((n, 4), 0.5, np.float32)
  assert linear_probe_accuracy(constant(12), train_labels, constant(10), test_labels,
                               mesh) == 0.3
