"""Mode coverage of a Gaussian mixture, the ALI paper's measure on the 25-Gaussian grid.

Each sample is assigned to the component of highest responsibility; a mode counts as covered
when at least one sample is assigned to it. Since that assignment also counts samples far from
any mode, we report the quality of the samples beside it: the fraction within
`quality_stds` standard deviations of their mode, and the number of modes that have at least
one such high-quality sample.
"""

import numpy as np


def assign_to_modes(samples: np.ndarray, means: np.ndarray, std: float) -> np.ndarray:
  """Index of the component of highest responsibility for each sample.

  With equal weights and one shared isotropic std, the log-responsibility is
  -||x - mu_k||^2 / (2 std^2) + const, so the assignment is the nearest mean.
  """
  samples = np.asarray(samples, np.float64)
  squared = np.sum((samples[:, None, :] - means[None, :, :]) ** 2, axis=-1)
  return np.argmax(-squared / (2.0 * std**2), axis=1)


def mode_coverage(samples: np.ndarray, means: np.ndarray, std: float,
                  quality_stds: float = 3.0) -> dict[str, float]:
  """Returns modes_covered, high_quality_fraction and high_quality_modes for `samples`."""
  samples = np.asarray(samples, np.float64)
  finite = np.all(np.isfinite(samples), axis=1)
  samples = samples[finite]
  if len(samples) == 0:
    return {"modes_covered": 0, "high_quality_fraction": 0.0, "high_quality_modes": 0}
  modes = assign_to_modes(samples, means, std)
  distance = np.linalg.norm(samples - means[modes], axis=1)
  high_quality = distance <= quality_stds * std
  return {
      "modes_covered": int(len(np.unique(modes))),
      # Non-finite samples count against quality: divide by all samples, not the finite ones.
      "high_quality_fraction": float(np.sum(high_quality) / len(finite)),
      "high_quality_modes": int(len(np.unique(modes[high_quality]))),
  }
