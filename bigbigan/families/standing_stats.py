"""BigGAN's standing statistics: BatchNorm statistics of the networks that inference runs.

    refresh = make_standing_stats_fn(config, networks, mesh)
    state = refresh(state, image_batches)   # uint8 [B, R_E, R_E, 3] global arrays

Evaluation, export and sampling run G and E with their EMA params (decay 0.9999 on
ImageNet), but the BatchNorm running averages that training keeps are those of the *live*
params, which the EMA trails by thousands of steps. As BigGAN does for its EMA generator,
the statistics are recomputed for the params that inference uses: `config.
standing_stats_batches` training-mode forwards, of G on prior samples and of E on training
images, each BatchNorm layer recording its batch's own mean and variance; the standing
statistics are their averages over the batches (the mean of the batch variances, as BigGAN's
accumulation). They land in `TrainState.standing_stats`, which `state.inference_batch_stats`
hands to every evaluation-mode forward (bigbigan_predict.py) and
`bigbigan.export` writes into bundles.

With `batch_norm_scope="per_device"`, each device's shard is normalised by its own
statistics in training, and the standing statistics are the devices' mean, as training's
running averages are (bigbigan_update.run_network).
"""

import contextlib
from typing import Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from bigbigan import sharding
from bigbigan.families.bigbigan_update import run_network
from bigbigan.families.common import normalise_images, sample_prior
from bigbigan.models.networks import Networks
from bigbigan.state import TrainState, averaged_params, inference_params

BATCH_STATS = "batch_stats"
# Folded into the run's seed for the latents and E's noise of the standing forwards.
STANDING_SEED = 0x57A7


def _batch_moments_interceptor(next_fun, args, kwargs, context):
  """Makes a training-mode nn.BatchNorm store its batch's own statistics (momentum 0).

  flax's BatchNorm updates its running averages as m * old + (1 - m) * batch: with `old`
  zeroed first, dividing the result by (1 - m) leaves the batch's statistics as flax
  computed them, to a float32 rounding or two.
  """
  module = context.module
  if not isinstance(module, nn.BatchNorm) or context.method_name != "__call__":
    return next_fun(*args, **kwargs)
  use_running_average = kwargs.get("use_running_average", args[1] if len(args) > 1 else None)
  if use_running_average is None:
    use_running_average = module.use_running_average
  if use_running_average or module.is_initializing():
    return next_fun(*args, **kwargs)
  if not 0.0 <= module.momentum < 1.0:
    raise ValueError(f"BatchNorm {module.path} has momentum {module.momentum}: standing "
                     "statistics need momentum < 1")
  names = ("mean", "var")
  for name in names:
    module.put_variable(BATCH_STATS, name,
                        jnp.zeros_like(module.get_variable(BATCH_STATS, name)))
  out = next_fun(*args, **kwargs)
  for name in names:
    module.put_variable(BATCH_STATS, name,
                        module.get_variable(BATCH_STATS, name) / (1.0 - module.momentum))
  return out


@contextlib.contextmanager
def batch_moments():
  """Within it, training-mode BatchNorms return, as their new `batch_stats`, the statistics
  of the batch they normalised instead of updated running averages (nested `apply`s, such
  as RevNet's reversible units, included). Enter it where the forward is traced."""
  with nn.intercept_methods(_batch_moments_interceptor):
    yield


def make_standing_stats_fn(config: ml_collections.ConfigDict, networks: Networks, mesh: Mesh
                           ) -> Callable[[TrainState, Iterable[jax.Array]], TrainState]:
  """(state, image batches) -> the state with its standing statistics recomputed.

  The batches are uint8 [B, R_E, R_E, 3] global arrays sharded on their first axis (the
  first `config.standing_stats_batches` are used); G's latents, of the same batch size, and
  E's noise are drawn from keys fixed by `config.seed`, so the same state and images give
  the same statistics. A state without `standing_stats` is returned unchanged.
  """
  per_device_mesh = mesh if config.batch_norm_scope == "per_device" else None
  base_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), STANDING_SEED)

  def moments(state: TrainState, images: jax.Array, index: jax.Array) -> dict:
    """{network: the batch statistics of one training-mode forward of its inference params}."""
    z_key, noise_key = jax.random.split(jax.random.fold_in(base_key, index))
    inputs = {"generator": (sample_prior(z_key, (images.shape[0], config.latent_dim),
                                         config.latent_prior),)}
    rngs = {"generator": None}
    if networks.encoder is not None:
      inputs["encoder"] = (normalise_images(images),)
      rngs["encoder"] = {"latent": noise_key}
    found = {}
    with batch_moments():
      for name in averaged_params(state):
        _, network = run_network(
            getattr(networks, name), getattr(state, name),
            sharding.gathered(inference_params(state, name), mesh),
            *inputs[name], rngs=rngs[name], per_device_mesh=per_device_mesh)
        found[name] = network.batch_stats
    return found

  def accumulate(total: dict, state: TrainState, images: jax.Array, index: jax.Array) -> dict:
    return jax.tree.map(jnp.add, total, moments(state, images, index))

  replicated = sharding.replicated(mesh)
  # The state in its own layout (None): the training state's EMA is split over the devices.
  accumulate = jax.jit(accumulate, in_shardings=(replicated, None,
                                                 sharding.batch_sharded(mesh), None),
                       out_shardings=replicated, donate_argnums=0)

  def refresh(state: TrainState, image_batches: Iterable[jax.Array]) -> TrainState:
    if state.standing_stats is None:
      return state
    total = jax.tree.map(jnp.zeros_like, state.standing_stats)
    count = 0
    for images in image_batches:
      if count == config.standing_stats_batches:
        break
      # One forward in flight at a time: queued programs whose BatchNorms all-reduce over
      # the devices can starve each other of the host's threads on CPU meshes.
      total = jax.block_until_ready(accumulate(total, state, images, jnp.uint32(count)))
      count += 1
    if count < config.standing_stats_batches:
      raise ValueError(f"standing statistics need {config.standing_stats_batches} batches; "
                       f"the images gave {count}")
    return state.replace(standing_stats=jax.tree.map(lambda s: s / count, total))

  return refresh
