"""The BigBiGAN update: `d_steps` discriminator steps, then one encoder/generator step, in one
jitted call per iteration.

    train_step = make_bigbigan_train_step(config, networks, optimizers, mesh)
    state, metrics = train_step(state, images)   # uint8 [d_steps, B, R_E, R_E, 3]

Each D step takes its own slice of real images and fresh z and E noise (drawn for the whole
batch from fold_in(state.rng, state.step)); the E/G step reuses the last slice for E and
draws fresh z and noise. D sees images at G's resolution: E's input, average-
pooled 2x2 when E's resolution is twice G's (the paper's "High Res E"). BatchNorm statistics
are over the global batch, or over each device's shard with
`config.batch_norm_scope="per_device"` (`run_network`). Real and fake pairs go
through D as one batch, so spectral norm advances once per D call, as in BigGAN's code;
they are interleaved row by row (`interleave_pairs`), which keeps every device's pairs on
that device where a concatenation would move rows between devices. Losses: BigBiGAN's
hinge (D) and linear (E, G) losses over the scores that the unary switches keep
(`losses.score_losses`), plus BigGAN's orthogonal regularisation of G's weights;
optionally ALICE's cycle terms (`config.cycle_x_weight`, `config.cycle_z_weight`:
||x - G(E(x))||_1 and ||z - E(G(z))||_1 in the E/G loss, logged as `cycle_x`, `cycle_z`).
All networks run in training mode in both kinds of step, so BatchNorm statistics (over the
global batch) and spectral-norm vectors advance with every forward of the adversarial
losses (the cycles' extra forwards leave them be); the EMA of G and E follows the E/G step.
Without an encoder it is BigGAN's GAN ("No E" in the paper).

Gradient accumulation (`config.accumulation_steps` = k, as BigGAN's `num_D_accumulations`
and `num_G_accumulations`): each D step and the E/G step split their global batch into k
micro-batches (micro-batch j: rows j, j + k, j + 2k, ..., so each is still split over every
device), run them one after another under `lax.scan` (activations of one micro-batch live
at a time) and apply one optimizer update with the mean of their gradients. z and E's noise
are drawn for the whole batch and split alike, so k changes only what BatchNorm sees:
- BatchNorm normalises each micro-batch by its own statistics (over its B/k examples, or
  its B/(k devices) on each device with `batch_norm_scope="per_device"`), and the running
  averages take the k micro-batches' updates in order. Without BatchNorm, k micro-batches
  give the full batch's update to float rounding.
- Spectral norm advances once per optimizer step, as with k = 1: every micro-batch's forward
  starts from the step's power-iteration vectors (the weights do not change between
  micro-batches, so each computes the same new vectors), which are stored once.
Loss and score metrics are the micro-batches' means; `encoder_std` is the mean of each
micro-batch's spread.
"""

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bigbigan import losses
from bigbigan import sharding
from bigbigan.errors import ConfigError
from bigbigan.families.common import (interleave_pairs, normalise_images, sample_prior,
                                      split_pairs, to_discriminator_resolution, upsample_to)
from bigbigan.models.layers import SPECTRAL
from bigbigan.models.networks import Networks
from bigbigan.state import NetworkState, TrainState, update_ema

MUTABLE = ["batch_stats", SPECTRAL]
# BatchNorm statistics over the global batch (cross-replica, as BigGAN) or per device.
BATCH_NORM_SCOPES = ("global", "per_device")


# The update's images are [d_steps, batch, ...]: the batch axis is split over `data`.
IMAGE_BATCH_AXIS = 1
NETWORK_NAMES = ("generator", "encoder", "discriminator")


def image_sharding(mesh: Mesh) -> NamedSharding:
  return sharding.batch_sharded(mesh, IMAGE_BATCH_AXIS)


def network_variables(network: NetworkState, params) -> dict:
  """Flax variables: `params` and the network's BN and SN state (the collections it has)."""
  variables = {"params": params, "batch_stats": network.batch_stats,
               SPECTRAL: network.spectral}
  return {name: value for name, value in variables.items() if value or name == "params"}


def run_network(module, network: NetworkState, params, *inputs, rngs=None,
                per_device_mesh: Optional[Mesh] = None, **batch_kwargs):
  """A training-mode forward; returns (output, the network with its new BN and SN state).

  `inputs` and `batch_kwargs` (keyword inputs, e.g. E's `noise`) are batches, split over the
  devices like the images. BatchNorm statistics are over the global batch (jit computes
  them across devices), or, with `per_device_mesh`, over each device's shard of the batch
  alone: the forward then runs under `jax.shard_map` over the mesh's data axis, and the
  running averages and spectral vectors it returns are the devices' mean (they must stay
  replicated). Randomness drawn from `rngs` is folded with the device index there, so
  devices draw different noise.
  """
  variables = network_variables(network, params)

  def forward(variables, inputs, batch_kwargs, rngs):
    return module.apply(variables, *inputs, train=True, rngs=rngs, mutable=MUTABLE,
                        **batch_kwargs)

  if per_device_mesh is None:
    out, mutated = forward(variables, inputs, batch_kwargs, rngs)
  else:
    def local(variables, inputs, batch_kwargs, rngs):
      device = jax.lax.axis_index(sharding.DATA_AXIS)
      rngs = jax.tree.map(lambda key: jax.random.fold_in(key, device), rngs)
      out, mutated = forward(variables, inputs, batch_kwargs, rngs)
      return out, jax.lax.pmean(mutated, sharding.DATA_AXIS)

    batch, replicated = PartitionSpec(sharding.DATA_AXIS), PartitionSpec()
    out, mutated = jax.shard_map(local, mesh=per_device_mesh,
                                 in_specs=(replicated, batch, batch, replicated),
                                 out_specs=(batch, replicated))(variables, inputs,
                                                                batch_kwargs, rngs)
  return out, network.replace(batch_stats=mutated.get("batch_stats", network.batch_stats),
                              spectral=mutated.get(SPECTRAL, network.spectral))


def _update(network: NetworkState, grads, tx: optax.GradientTransformation,
            mesh: Mesh) -> NetworkState:
  # The gradients and params enter the optimizer whole on every device. Left free, XLA's
  # partitioner carries the split layout of Adam's moments (sharding.state_shardings) back
  # through the gradients into D's MLP activations, and reshards them with all-to-alls
  # and collective-permutes (9 and 3 in the full-size update); whole, each device updates
  # its slice of the moments from the all-reduced gradient with no other collective.
  whole = sharding.replicated(mesh)
  grads = jax.lax.with_sharding_constraint(grads, whole)
  network = network.replace(params=jax.lax.with_sharding_constraint(network.params, whole))
  updates, opt_state = tx.update(grads, network.opt_state, network.params)
  return network.replace(params=optax.apply_updates(network.params, updates),
                         opt_state=opt_state)


def _split_scores(scores: dict[str, jax.Array]) -> tuple[dict, dict]:
  """D's scores of interleaved pairs (`interleave_pairs`) as (real's, fake's)."""
  split = {k: split_pairs(v) for k, v in scores.items()}
  return {k: v[0] for k, v in split.items()}, {k: v[1] for k, v in split.items()}


def _score_metrics(real: dict, fake: dict) -> dict[str, jax.Array]:
  metrics = {f"real_score_{k}": jnp.mean(v) for k, v in real.items()}
  metrics.update({f"fake_score_{k}": jnp.mean(v) for k, v in fake.items()})
  return metrics


def _mutable_state(state: TrainState) -> dict[str, tuple]:
  """{network: (batch_stats, spectral)}: what a training-mode forward changes."""
  return {name: (getattr(state, name).batch_stats, getattr(state, name).spectral)
          for name in NETWORK_NAMES if getattr(state, name) is not None}


def _with_mutable_state(state: TrainState, mutable: dict[str, tuple]) -> TrainState:
  return state.replace(**{
      name: getattr(state, name).replace(batch_stats=batch_stats, spectral=spectral)
      for name, (batch_stats, spectral) in mutable.items()})


def split_micro_batches(x: jax.Array, k: int, mesh: Mesh) -> jax.Array:
  """A batch [B, ...] sharded on `data` as k micro-batches [k, B/k, ...]: micro-batch j is
  rows j, j + k, j + 2k, ..., itself sharded on `data`.

  The strided split keeps every row on its device: device d holds rows [d b, (d + 1) b) of
  the batch (b = B / devices); seen as [B/k, k, ...] these are rows [d b/k, (d + 1) b/k) of
  the first axis when k divides b, the same bytes on the same device, and the transpose to
  [k, B/k, ...] is local. So each micro-batch takes b/k rows of every device's shard and no
  data moves. (The contiguous split, reshaping to [k, B/k, ...] directly, would make
  micro-batch j rows [j B/k, (j + 1) B/k): the shards of a few devices only, and sharding it
  over all of them takes an all-to-all per micro-batch.) The micro-batches are also the same
  on any number of devices.
  """
  batch = x.shape[0]
  devices = mesh.devices.size
  if batch % (devices * k):
    raise ConfigError(f"config.accumulation_steps={k} does not divide the per-device batch "
                      f"{batch}/{devices}: use a divisor of it")
  micro = x.reshape(batch // k, k, *x.shape[1:]).swapaxes(0, 1)
  return jax.lax.with_sharding_constraint(micro, sharding.batch_sharded(mesh, 1))


def accumulate_gradients(micro_step: Callable, state: TrainState, batch, k: int, mesh: Mesh):
  """Runs `micro_step(state, batch) -> (state, grads, metrics)` on the k micro-batches of
  `batch` (a pytree of [B, ...] arrays, `split_micro_batches`) one after another.

  Returns (state, grads, metrics): the gradients and metrics are the micro-batches' means;
  the state has the BatchNorm running averages after all k micro-batches' updates, in order,
  and the spectral-norm vectors of one power iteration from the state's (each micro-batch
  starts from the step's vectors, and all compute the same new ones from the same weights).
  Params are not changed. k = 1 runs `micro_step` on `batch` itself.
  """
  if k == 1:
    return micro_step(state, batch)
  micro_batches = jax.tree.map(lambda a: split_micro_batches(a, k, mesh), batch)
  initial = _mutable_state(state)
  # Shapes of one micro-batch's gradients and metrics: the sums start from zeros of these.
  _, grad_shapes, metric_shapes = jax.eval_shape(
      micro_step, state, jax.tree.map(lambda a: a[0], micro_batches))
  zeros = lambda shapes: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def body(carry, micro_batch):
    mutable, grad_sum, metric_sum = carry
    run_state = _with_mutable_state(state, {
        name: (batch_stats, initial[name][1]) for name, (batch_stats, _) in mutable.items()})
    new_state, grads, metrics = micro_step(run_state, micro_batch)
    return (_mutable_state(new_state), jax.tree.map(jnp.add, grad_sum, grads),
            jax.tree.map(jnp.add, metric_sum, metrics)), None

  (mutable, grad_sum, metric_sum), _ = jax.lax.scan(
      body, (initial, zeros(grad_shapes), zeros(metric_shapes)), micro_batches)
  mean = lambda tree: jax.tree.map(lambda total: total / k, tree)
  return _with_mutable_state(state, mutable), mean(grad_sum), mean(metric_sum)


def make_bigbigan_train_step(config: ml_collections.ConfigDict, networks: Networks,
                             optimizers: dict[str, optax.GradientTransformation], mesh: Mesh,
                             unroll_d_steps: Optional[bool] = None
                             ) -> Callable[[TrainState, jax.Array], tuple[TrainState, dict]]:
  """Builds the jitted BigBiGAN iteration for `config` (see the module docstring).

  The images are sharded on their batch axis (axis 1) over the mesh's `data` axis; the
  state is donated and laid out by `sharding.state_shardings` (Adam's moments and the EMA
  split over the devices, the rest replicated). On accelerators the D steps run under one
  `lax.scan`, so XLA compiles the D step once whatever `d_steps` is; on CPUs (`unroll_d_steps=None`
  decides by the mesh's devices) they are written out one after another, as
  `unroll_d_steps=True` does anywhere: the same computation, each step compiled anew.
  """
  if config.num_classes:
    raise ConfigError(f"config.num_classes={config.num_classes}: BigBiGAN is unconditional "
                      "(single label); set it to 0")
  if config.d_steps < 1:
    raise ConfigError(f"config.d_steps={config.d_steps!r}: must be an integer >= 1")
  if config.batch_norm_scope not in BATCH_NORM_SCOPES:
    raise ConfigError(f"config.batch_norm_scope={config.batch_norm_scope!r}: allowed "
                      f"{BATCH_NORM_SCOPES}")
  accumulation_steps = config.accumulation_steps
  if not isinstance(accumulation_steps, int) or accumulation_steps < 1:
    raise ConfigError(f"config.accumulation_steps={accumulation_steps!r}: must be an integer "
                      ">= 1 (1: no gradient accumulation)")
  g_module, e_module, d_module = networks
  has_encoder = e_module is not None
  _run = functools.partial(
      run_network,
      per_device_mesh=mesh if config.batch_norm_scope == "per_device" else None)
  accumulate = functools.partial(accumulate_gradients, k=accumulation_steps, mesh=mesh)
  batch_sharding = sharding.batch_sharded(mesh)
  ortho_weight = config.generator.ortho_weight
  # Configs written before the cycle terms existed have none.
  cycle_x_weight = config.get("cycle_x_weight", 0.0) if has_encoder else 0.0
  cycle_z_weight = config.get("cycle_z_weight", 0.0) if has_encoder else 0.0
  if unroll_d_steps is None:
    # XLA:CPU runs the body of a while loop several times slower than the same ops outside
    # one (the MNIST update: 1.58 s against 0.22 s per iteration on one core, d_steps 1;
    # docs/benchmarks.md), which outweighs the scan's shorter compile.
    unroll_d_steps = mesh.devices.flat[0].platform == "cpu"

  def draw_latents(rng: jax.Array, batch: int) -> tuple[jax.Array, jax.Array]:
    """G's z and E's noise eps for a whole batch: micro-batches take their rows of these, so
    the draws do not depend on config.accumulation_steps."""
    z_rng, e_rng = jax.random.split(rng)
    z = sample_prior(z_rng, (batch, config.latent_dim), config.latent_prior)
    noise = jax.random.normal(e_rng, (batch, config.latent_dim))
    return (jax.lax.with_sharding_constraint(z, batch_sharding),
            jax.lax.with_sharding_constraint(noise, batch_sharding))

  def d_micro_step(state: TrainState, batch):
    """D's gradient on one (micro-)batch, and the state with G's, E's and D's new BN/SN."""
    x, z, noise = batch
    x_d = to_discriminator_resolution(x, config.resolution)
    # G and E are fixed during D's step: their outputs carry no gradient.
    fake, generator = _run(g_module, state.generator, state.generator.params, z)
    images = interleave_pairs(x_d, jax.lax.stop_gradient(fake).astype(x_d.dtype))
    latents = None
    encoder = state.encoder
    if has_encoder:
      encoded, encoder = _run(e_module, state.encoder, state.encoder.params, x, noise=noise)
      latents = interleave_pairs(jax.lax.stop_gradient(encoded["z_sample"]), z)

    def loss_fn(d_params):
      scores, discriminator = _run(d_module, state.discriminator, d_params, images, latents)
      real, fake_scores = _split_scores(scores)
      d_loss, _ = losses.score_losses(real, fake_scores)
      return d_loss, (discriminator, {"d_loss": d_loss, **_score_metrics(real, fake_scores)})

    grads, (discriminator, metrics) = jax.grad(loss_fn, has_aux=True)(
        state.discriminator.params)
    return (state.replace(generator=generator, encoder=encoder, discriminator=discriminator),
            grads, metrics)

  def eg_micro_step(state: TrainState, batch):
    """G's and E's gradients on one (micro-)batch, and the state with the new BN/SN."""
    x, z, noise = batch
    x_d = to_discriminator_resolution(x, config.resolution)
    eg_params = {"generator": state.generator.params}
    if has_encoder:
      eg_params["encoder"] = state.encoder.params

    def loss_fn(eg_params):
      fake, generator = _run(g_module, state.generator, eg_params["generator"], z)
      images = interleave_pairs(x_d, fake.astype(x_d.dtype))
      latents, encoder, extra = None, state.encoder, {}
      if has_encoder:
        encoded, encoder = _run(e_module, state.encoder, eg_params["encoder"], x, noise=noise)
        latents = interleave_pairs(encoded["z_sample"], z)
        # The spread of E(x) over the batch: near zero means the encoder has collapsed.
        extra["encoder_std"] = jnp.mean(jnp.std(encoded["z_mean"], axis=0))
      scores, discriminator = _run(d_module, state.discriminator, state.discriminator.params,
                                   images, latents)
      real, fake_scores = _split_scores(scores)
      _, eg_loss = losses.score_losses(real, fake_scores)
      ortho = losses.orthogonal_regularisation(eg_params["generator"], ortho_weight)
      metrics = {"eg_loss": eg_loss, "orthogonal_regularisation": ortho, **extra}
      total = eg_loss + ortho
      # The cycles' forwards leave the BN statistics and spectral vectors as the loss's
      # own forwards set them: their new state is dropped.
      if cycle_x_weight:
        reconstructed, _ = _run(g_module, state.generator, eg_params["generator"],
                                encoded["z_sample"])
        metrics["cycle_x"] = losses.reconstruction_loss(
            x_d.astype(jnp.float32), reconstructed.astype(jnp.float32), "l1")
        total = total + cycle_x_weight * metrics["cycle_x"]
      if cycle_z_weight:
        recoded, _ = _run(e_module, state.encoder, eg_params["encoder"],
                          upsample_to(fake.astype(x.dtype), x.shape[1]), noise=noise)
        metrics["cycle_z"] = losses.reconstruction_loss(
            z, recoded["z_mean"].astype(jnp.float32), "l1")
        total = total + cycle_z_weight * metrics["cycle_z"]
      return total, (generator, encoder, discriminator, metrics)

    grads, (generator, encoder, discriminator, metrics) = jax.grad(loss_fn, has_aux=True)(
        eg_params)
    return (state.replace(generator=generator, encoder=encoder, discriminator=discriminator),
            grads, metrics)

  def d_step(state: TrainState, batch):
    state, grads, metrics = accumulate(d_micro_step, state, batch)
    discriminator = _update(state.discriminator, grads, optimizers["discriminator"], mesh)
    metrics["d_grad_norm"] = optax.tree.norm(grads)
    return state.replace(discriminator=discriminator), metrics

  def eg_step(state: TrainState, batch):
    state, grads, metrics = accumulate(eg_micro_step, state, batch)
    generator = _update(state.generator, grads["generator"], optimizers["generator"], mesh)
    encoder = state.encoder
    if has_encoder:
      encoder = _update(encoder, grads["encoder"], optimizers["encoder"], mesh)
    metrics["eg_grad_norm"] = optax.tree.norm(grads)
    return state.replace(generator=generator, encoder=encoder), metrics

  # Each step's images become [-1, 1] inside that step, in the networks' compute dtype: the
  # whole [d_steps, B, R, R, 3] uint8 batch in float32 would take 4x its bytes, alive
  # through all the D steps.
  normalise = functools.partial(normalise_images, dtype=jnp.dtype(config.compute_dtype))

  def d_steps(state: TrainState, images: jax.Array, rngs: jax.Array
              ) -> tuple[TrainState, dict]:
    """The D steps on uint8 images [d_steps, B, ...] with keys [d_steps]; the last step's
    metrics."""
    def body(state, inputs):
      images_i, rng = inputs
      return d_step(state, (normalise(images_i),
                            *draw_latents(rng, images.shape[IMAGE_BATCH_AXIS])))

    if unroll_d_steps:
      for i in range(config.d_steps):
        state, metrics = body(state, (images[i], rngs[i]))
      return state, metrics
    state, metrics = jax.lax.scan(body, state, (images, rngs))
    return state, jax.tree.map(lambda m: m[-1], metrics)

  def train_step(state: TrainState, images: jax.Array) -> tuple[TrainState, dict]:
    batch = images.shape[IMAGE_BATCH_AXIS]
    rngs = jax.random.split(jax.random.fold_in(state.rng, state.step), config.d_steps + 1)
    state, d_metrics = d_steps(state, images, rngs[:-1])
    # The E/G step reuses the last D step's real images.
    state, metrics = eg_step(state, (normalise(images[-1]), *draw_latents(rngs[-1], batch)))
    metrics = {**d_metrics, **metrics}
    state = state.replace(step=state.step + 1)
    return update_ema(state, config.ema_decay, config.ema_start_step), metrics

  return sharding.jit_update(train_step, image_sharding(mesh), mesh)
