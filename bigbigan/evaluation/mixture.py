"""Periodic evaluation on the Gaussian mixture: mode coverage, sample quality, reconstruction.

Samples G(z) come from a fixed set of `config.eval_samples` latents, so evaluations at
different steps (and of different runs with the same seed) are comparable. Inputs are padded
to a multiple of the device count and the padding dropped, so every sample counts. Reconstructions
G(E(x)) use the encoder's mean on the held-out evaluation set.
"""

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.sharding import Mesh

from bigbigan import sharding
from bigbigan import steps
from bigbigan.data.toy import Mixture
from bigbigan.evaluation import plots
from bigbigan.evaluation.mode_coverage import mode_coverage
from bigbigan.models.networks import Networks
from bigbigan.state import TrainState


class MixtureEvaluator:
  """Call with (state, step) to get the metrics; on process 0 it also writes a PNG."""

  def __init__(self, config: ml_collections.ConfigDict, mixture: Mixture, networks: Networks,
               mesh: Mesh, workdir: str):
    self._mixture = mixture
    self._workdir = workdir
    self._fns = steps.make_inference_fns(networks, mesh)
    latents = steps.sample_prior(jax.random.PRNGKey(config.seed + 1),
                                 (config.eval_samples, config.latent_dim), config.latent_prior)
    self._num_samples = config.eval_samples
    self._latents = sharding.from_host_array(np.asarray(latents), mesh)
    self._data = sharding.from_host_array(mixture.eval, mesh)
    self._encoder_rng = jax.random.PRNGKey(config.seed + 2)

  def __call__(self, state: TrainState, step: int) -> dict[str, float]:
    data = self._mixture.eval
    samples = sharding.gather_rows(self._fns["generate"](state, self._latents), self._num_samples)
    metrics = mode_coverage(samples, self._mixture.means, self._mixture.std)
    panels = {"data": data, "samples G(z)": samples}
    if "encode" in self._fns:
      _, z_mean = self._fns["encode"](state, self._data, self._encoder_rng)
      reconstructions = sharding.gather_rows(self._fns["generate"](state, z_mean), len(data))
      metrics["reconstruction_error"] = float(
          np.mean(np.linalg.norm(data - reconstructions, axis=1)))
      panels["reconstructions G(E(x))"] = reconstructions
    if jax.process_index() == 0:
      title = (f"step {step}: {metrics['modes_covered']} modes covered, "
               f"{100 * metrics['high_quality_fraction']:.1f}% high quality")
      plots.save_scatter_panels(epath.Path(self._workdir) / f"mixture_{step:07d}.png",
                                panels, self._mixture.means, title)
    return metrics
