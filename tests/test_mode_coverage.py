"""Mode coverage on hand-made sample sets, and the mixture data it is measured against."""

import numpy as np

from bigbigan.data.toy import Mixture, mixture_means, sample_mixture
from bigbigan.evaluation.mode_coverage import assign_to_modes, mode_coverage

MEANS = mixture_means(5, 2.0)
STD = 0.05


def test_grid_is_the_papers():
  assert sorted(set(MEANS[:, 0])) == [-4.0, -2.0, 0.0, 2.0, 4.0]
  assert sorted({tuple(m) for m in MEANS}) == sorted(
      (a, b) for a in (-4.0, -2.0, 0.0, 2.0, 4.0) for b in (-4.0, -2.0, 0.0, 2.0, 4.0))


def test_all_modes():
  samples = sample_mixture(np.random.default_rng(0), 10_000, MEANS, STD)
  result = mode_coverage(samples, MEANS, STD)
  assert result["modes_covered"] == 25
  assert result["high_quality_modes"] == 25
  # 3 std in 2-D holds 1 - exp(-4.5) = 98.9% of a Gaussian's mass.
  np.testing.assert_allclose(result["high_quality_fraction"], 1 - np.exp(-4.5), atol=0.005)


def test_one_mode():
  samples = MEANS[7] + STD * np.random.default_rng(1).standard_normal((500, 2))
  result = mode_coverage(samples, MEANS, STD)
  assert result["modes_covered"] == 1
  assert result["high_quality_modes"] == 1


def test_no_mode_when_no_finite_sample():
  samples = np.full((100, 2), np.nan)
  result = mode_coverage(samples, MEANS, STD)
  assert result == {"modes_covered": 0, "high_quality_fraction": 0.0, "high_quality_modes": 0}


def test_far_samples_cover_modes_but_are_not_high_quality():
  # Halfway between modes: still assigned (the paper's rule), never high quality.
  samples = MEANS[:24] + np.array([0.9, 0.9])
  result = mode_coverage(samples, MEANS, STD)
  assert result["modes_covered"] == 24
  assert result["high_quality_fraction"] == 0.0
  assert result["high_quality_modes"] == 0


def test_assignment_is_highest_responsibility():
  rng = np.random.default_rng(2)
  samples = rng.uniform(-5, 5, (200, 2))
  log_resp = -np.sum((samples[:, None] - MEANS[None]) ** 2, -1) / (2 * STD**2)
  np.testing.assert_array_equal(assign_to_modes(samples, MEANS, STD),
                                np.argmax(log_resp, axis=1))


def test_training_data_has_the_configured_statistics(tiny_config):
  config = tiny_config(mixture__num_train=50_000)
  mixture = Mixture.from_config(config)
  modes = assign_to_modes(mixture.train, mixture.means, mixture.std)
  residual = mixture.train - mixture.means[modes]
  np.testing.assert_allclose(residual.std(axis=0), 0.05, rtol=0.03)
  np.testing.assert_allclose(np.bincount(modes, minlength=25) / 50_000, 1 / 25, atol=0.004)


def test_batches_are_resumable_and_split_over_processes(tiny_config):
  mixture = Mixture.from_config(tiny_config())
  full = mixture.train_batches(16, seed=3, process_index=0, process_count=1)
  batches = [next(full) for _ in range(70)]  # 512 // 16 = 32 steps per epoch: 2 epochs+.
  resumed = mixture.train_batches(16, seed=3, start_step=40, process_index=0, process_count=1)
  for step in range(40, 70):
    np.testing.assert_array_equal(next(resumed), batches[step])
  halves = [mixture.train_batches(16, seed=3, start_step=40, process_index=p, process_count=2)
            for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([next(h) for h in halves]), batches[40])
  # One epoch visits every training sample once.
  epoch = np.concatenate(batches[:32])
  assert len(np.unique(epoch, axis=0)) == 512
