"""Periodic evaluation on the Gaussian mixture: mode coverage, sample quality, reconstruction.

Samples G(z) come from a fixed set of `config.eval_samples` latents, so evaluations at
different steps (and of different runs with the same seed) are comparable. Inputs are padded
to a multiple of the device count and the padding dropped, so every sample counts. Reconstructions
G(E(x)) use the encoder's mean on the held-out evaluation set.
"""

import jax
import numpy as np
from etils import epath

from bigbigan import sharding
from bigbigan.evaluation import plots
from bigbigan.evaluation.context import EvaluationContext
from bigbigan.evaluation.mode_coverage import mode_coverage
from bigbigan.families.common import PredictFns
from bigbigan.state import TrainState


class ModeCoverage:
  """The `mode_coverage` evaluator; on process 0 it also writes a PNG."""

  def __init__(self, context: EvaluationContext):
    config, mesh = context.config, context.mesh
    self._mixture = context.data.mixture
    self._workdir = context.workdir
    self._mesh = mesh
    self._num_samples = config.eval_samples
    self._latent_key = jax.random.PRNGKey(config.seed + 1)
    self._latents = None  # Drawn by the predict functions' prior at the first run.
    self._data = sharding.from_host_array(self._mixture.eval, mesh)
    self._encoder_rng = jax.random.PRNGKey(config.seed + 2)

  def run(self, predict: PredictFns, state: TrainState, step: int) -> dict[str, float]:
    if self._latents is None:
      self._latents = sharding.from_host_array(
          predict.sample_latents(self._latent_key, self._num_samples), self._mesh)
    data = self._mixture.eval
    samples = sharding.gather_rows(predict.generate(state, self._latents), self._num_samples)
    metrics = mode_coverage(samples, self._mixture.means, self._mixture.std)
    panels = {"data": data, "samples G(z)": samples}
    if predict.encode is not None:
      _, z_mean = predict.encode(state, self._data, self._encoder_rng)
      reconstructions = sharding.gather_rows(predict.generate(state, z_mean), len(data))
      metrics["reconstruction_error"] = float(
          np.mean(np.linalg.norm(data - reconstructions, axis=1)))
      panels["reconstructions G(E(x))"] = reconstructions
    if jax.process_index() == 0:
      title = (f"step {step}: {metrics['modes_covered']} modes covered, "
               f"{100 * metrics['high_quality_fraction']:.1f}% high quality")
      plots.save_scatter_panels(epath.Path(self._workdir) / f"mixture_{step:07d}.png",
                                panels, self._mixture.means, title)
    return metrics
