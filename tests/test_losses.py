"""The adversarial losses against hand-computed float64 values."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from bigbigan import losses

REAL = [0.0, 2.0]
FAKE = [-1.0, 3.0]


def softplus(t):
  return math.log1p(math.exp(t))


def test_log_loss_discriminator_matches_hand_value():
  # -mean log sigmoid(r) - mean log(1 - sigmoid(f))
  expected = (softplus(-0.0) + softplus(-2.0)) / 2 + (softplus(-1.0) + softplus(3.0)) / 2
  got = losses.discriminator_loss(jnp.array(REAL), jnp.array(FAKE), "bigan")
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_inverse_objective_swaps_labels():
  # E is pushed to make real pairs look fake, G to make fake pairs look real.
  expected = (softplus(0.0) + softplus(2.0)) / 2 + (softplus(1.0) + softplus(-3.0)) / 2
  got = losses.generator_encoder_loss(jnp.array(REAL), jnp.array(FAKE), "bigan")
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_minimax_is_the_negated_discriminator_loss():
  d = losses.discriminator_loss(jnp.array(REAL), jnp.array(FAKE), "minimax")
  eg = losses.generator_encoder_loss(jnp.array(REAL), jnp.array(FAKE), "minimax")
  np.testing.assert_allclose(eg, -d, rtol=1e-6)


def test_hinge_matches_hand_value():
  # max(0, 1 - r): [1, 0]; max(0, 1 + f): [0, 4]
  d = losses.discriminator_loss(jnp.array(REAL), jnp.array(FAKE), "hinge")
  np.testing.assert_allclose(d, 0.5 + 2.0, rtol=1e-6)
  eg = losses.generator_encoder_loss(jnp.array(REAL), jnp.array(FAKE), "hinge")
  np.testing.assert_allclose(eg, 1.0 - 1.0, atol=1e-7)


def test_log_loss_is_stable_for_large_logits():
  d = losses.discriminator_loss(jnp.array([200.0]), jnp.array([-200.0]), "bigan")
  eg = losses.generator_encoder_loss(jnp.array([200.0]), jnp.array([-200.0]), "bigan")
  assert float(d) == pytest.approx(0.0, abs=1e-6)
  assert float(eg) == pytest.approx(400.0, rel=1e-6)


def test_unknown_loss_names_allowed_values():
  with pytest.raises(ValueError, match="allowed"):
    losses.discriminator_loss(jnp.zeros(1), jnp.zeros(1), "wasserstein")


def test_r1_penalty_of_a_linear_discriminator_is_its_squared_weight_norm():
  w_x, w_z = jnp.array([1.0, -2.0, 0.5]), jnp.array([3.0, 0.0])
  x, z = jnp.ones((4, 3)), jnp.ones((4, 2))
  penalty = losses.r1_penalty(lambda a, b: a @ w_x + b @ w_z + 7.0, (x, z))
  np.testing.assert_allclose(penalty, 1.0 + 4.0 + 0.25 + 9.0, rtol=1e-6)


def test_r1_penalty_matches_finite_differences():
  def discriminator(x):
    return jnp.sum(jnp.tanh(x * jnp.array([1.0, 2.0])) ** 2, axis=1)
  x = jnp.array([[0.3, -0.2], [0.1, 0.4]], jnp.float32)
  eps = 1e-3
  grads = np.stack([(np.asarray(discriminator(x + eps * e)) -
                     np.asarray(discriminator(x - eps * e))) / (2 * eps)
                    for e in jnp.eye(2)], axis=1)
  expected = np.mean(np.sum(grads**2, axis=1))
  np.testing.assert_allclose(losses.r1_penalty(discriminator, (x,)), expected, rtol=1e-3)


def test_reconstruction_losses_match_hand_values():
  x = jnp.array([[1.0, 2.0], [0.0, 0.0]])
  x_hat = jnp.array([[0.0, 4.0], [1.0, 0.0]])
  # Per example: l2 = 1 + 4 = 5 and 1; l1 = 1 + 2 = 3 and 1.
  np.testing.assert_allclose(losses.reconstruction_loss(x, x_hat, "l2"), 3.0)
  np.testing.assert_allclose(losses.reconstruction_loss(x, x_hat, "l1"), 2.0)


def test_latent_regression_loss_is_the_papers_sigmoid_cross_entropy():
  logits = np.array([[0.3, -2.0], [1.5, 0.0]])
  z = np.array([[0.2, -0.9], [0.7, 0.0]])
  t = (z + 1) / 2
  p = 1 / (1 + np.exp(-logits))
  cross_entropy = -(t * np.log(p) + (1 - t) * np.log(1 - p))
  entropy = -(t * np.log(t) + (1 - t) * np.log(1 - t))
  expected = np.mean(cross_entropy - entropy)
  assert float(losses.latent_regression_loss(jnp.asarray(logits, jnp.float32),
                                             jnp.asarray(z, jnp.float32), "uniform")
               ) == pytest.approx(expected, rel=1e-5)
  # A perfect prediction (logit(t)) scores 0, also where a target is 0 or 1.
  z_edges = np.array([[-1.0, 1.0, 0.5]])
  t_edges = np.clip((z_edges + 1) / 2, 1e-7, 1 - 1e-7)
  perfect = np.log(t_edges / (1 - t_edges))
  assert float(losses.latent_regression_loss(jnp.asarray(perfect, jnp.float32),
                                             jnp.asarray(z_edges, jnp.float32), "uniform")
               ) == pytest.approx(0.0, abs=1e-5)
  # Normal prior: the squared error.
  assert float(losses.latent_regression_loss(jnp.asarray(logits), jnp.asarray(z), "normal")
               ) == pytest.approx(np.mean((logits - z) ** 2))
