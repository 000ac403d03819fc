"""The learning-rate schedules are laid out in iterations for every network: D, which updates
`d_steps` times an iteration, decays over the same iterations as G and E, not d_steps times
faster."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigbigan import optimizers
from bigbigan.config_files import apply_overrides, load_config
from conftest import REPO

TOTAL, D_STEPS = 10, 2


def _config():
  # Decay from half-way (iteration 5) to 0 at the end; D's base rate differs from G's.
  return apply_overrides(load_config(f"{REPO}/configs/bigbigan_base.py:tiny"), {
      "total_steps": TOTAL, "d_steps": D_STEPS, "optimizer.lr_decay_start_fraction": 0.5,
      "optimizer.lr_decay_final_scale": 0.0, "optimizer.generator_learning_rate": 1e-4,
      "optimizer.discriminator_learning_rate": 3e-4})


def _d_rates_by_iteration(config):
  """D's learning rate at each of its updates, from what its optimizer does: Adam's bias-
  corrected step for a constant unit gradient is the learning rate (up to eps)."""
  optimizer = optimizers.make_optimizers(config)["discriminator"]
  params = jnp.zeros(())
  state = optimizer.init(params)
  rates = []
  for _ in range(TOTAL * D_STEPS):
    updates, state = optimizer.update(jnp.ones(()), state, params)
    params = optax.apply_updates(params, updates)
    rates.append(-float(updates))
  return np.reshape(rates, (TOTAL, D_STEPS))


def test_the_discriminator_decays_over_the_same_iterations_as_the_generator():
  config = _config()
  schedule = optimizers.learning_rate_schedule(1e-4, TOTAL, 0.5, 0.0)  # G's, by iteration.
  generator = np.array([float(schedule(i)) for i in range(TOTAL)])
  # G: constant for 5 iterations, then linear to 0.
  np.testing.assert_allclose(generator[:5], 1e-4)
  assert generator[5] == pytest.approx(1e-4) and generator[9] == pytest.approx(2e-5)
  d_rates = _d_rates_by_iteration(config)
  # Both D updates of iteration i at D's base rate times G's share at iteration i.
  expected = np.repeat((3e-4 / 1e-4 * generator)[:, None], D_STEPS, axis=1)
  np.testing.assert_allclose(d_rates, expected, rtol=1e-4,  # float32 Adam: 1e-5 apart.
                             err_msg="D's learning rate, by iteration (rows) and D step")
