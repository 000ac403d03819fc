"""The MLP family's update: BiGAN, ALI, the GAN baseline, latent regressors, an autoencoder.

`make_train_step` returns `train_step(state, x) -> (state, metrics)`: one BiGAN iteration on a
global batch sharded over the mesh's `data` axis, with the state donated and laid out by
`sharding.state_shardings` (Adam's moments and the EMA split over the devices). Its
randomness comes from `fold_in(state.rng, state.step)` alone, so it is a pure function of its
inputs: the same on any number of devices, and the same after a resume.
"""

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from bigbigan import losses
from bigbigan import sharding
from bigbigan.errors import ConfigError
from bigbigan.families.common import interleave_pairs, sample_prior
from bigbigan.models.networks import Networks
from bigbigan.state import NetworkState, TrainState, update_ema

UPDATE_MODES = ("simultaneous", "alternating")
LATENT_REGRESSOR_OBJECTIVES = ("latent_regressor", "joint_latent_regressor")
OBJECTIVES = ("adversarial", "autoencoder") + LATENT_REGRESSOR_OBJECTIVES


def network_variables(network: NetworkState, params) -> dict:
  """Flax variables: `params` plus the network's BatchNorm statistics, if it has any."""
  variables = {"params": params}
  if network.batch_stats:
    variables["batch_stats"] = network.batch_stats
  return variables


def _train_forward(module, network: NetworkState, params, *inputs, rngs=None):
  """A training-mode forward of `module` with `params` and the network's BN statistics;
  returns (out, new stats)."""
  out, mutated = module.apply(network_variables(network, params), *inputs, train=True,
                              rngs=rngs, mutable=["batch_stats"])
  return out, mutated.get("batch_stats", network.batch_stats)


def joint_discriminator(config: ml_collections.ConfigDict, networks: Networks) -> bool:
  """Whether D judges (x, z) pairs (BiGAN/ALI) rather than x alone (GAN, latent regressors)."""
  return networks.encoder is not None and config.objective == "adversarial"


def _concat(z: Optional[jax.Array], onehot: Optional[jax.Array]) -> Optional[jax.Array]:
  """[z, onehot] along features, either part possibly absent (None if both are)."""
  parts = [part for part in (z, onehot) if part is not None]
  return jnp.concatenate(parts, axis=-1) if parts else None


def _split_batch(batch, num_classes: int) -> tuple[jax.Array, Optional[jax.Array]]:
  """x, and the one-hot labels of a conditional model's (x, labels) batch (else None)."""
  if not num_classes:
    return batch, None
  x, labels = batch
  return x, jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


def _update(network: NetworkState, grads, tx: optax.GradientTransformation,
            batch_stats) -> NetworkState:
  updates, opt_state = tx.update(grads, network.opt_state, network.params)
  return network.replace(params=optax.apply_updates(network.params, updates),
                         opt_state=opt_state, batch_stats=batch_stats)


def make_train_step(config: ml_collections.ConfigDict, networks: Networks,
                    optimizers: dict[str, optax.GradientTransformation], mesh: Mesh,
                    normalise: Callable[[jax.Array], jax.Array] = lambda x: x,
                    num_classes: int = 0
                    ) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
  """Builds the jitted BiGAN/ALI/GAN (or latent regressor) update for the config.

  "simultaneous" (BiGAN appendix B): D and E/G gradients are taken at the same parameters,
  from one shared forward pass. "alternating": D is updated first and E/G then see the new D.
  `normalise` maps the batch as shipped (e.g. uint8 pixels) to the networks' input range,
  on the devices. A conditional config (`num_classes` > 0) takes (x, labels) batches.

  Objectives: "adversarial" (D judges (x, z) pairs, or x alone without an encoder);
  "latent_regressor" (a GAN, and E regresses z from G(z) with no gradient into G) and
  "joint_latent_regressor" (the regression loss also trains G, with weight
  `config.joint_latent_regressor_weight`), the BiGAN paper's LR and JLR baselines;
  "autoencoder".
  """
  if config.objective == "autoencoder":
    return _make_autoencoder_step(config, networks, optimizers, mesh, normalise)
  if config.update_mode not in UPDATE_MODES:
    raise ConfigError(f"config.update_mode={config.update_mode!r}: allowed {UPDATE_MODES}")
  has_encoder = networks.encoder is not None
  joint = joint_discriminator(config, networks)
  regress = config.objective in LATENT_REGRESSOR_OBJECTIVES
  generator_weight = (config.joint_latent_regressor_weight
                      if config.objective == "joint_latent_regressor" else 0.0)
  r1_weight = config.discriminator.r1_weight
  batch_sharding = sharding.batch_sharded(mesh)

  def forward(d_params, eg_params, state: TrainState, x, z, onehot, encoder_rng):
    """Returns (d_loss, eg_loss), (new batch stats per network, metrics)."""
    fake_x, g_stats = _train_forward(networks.generator, state.generator,
                                     eg_params["generator"], _concat(z, onehot))
    stats = {"generator": g_stats}
    if has_encoder:
      # BiGAN's E encodes real data; a latent regressor encodes G's samples.
      e_input = x
      if regress:
        # Forward G(z) as is; backward, G gets `generator_weight` times the regression
        # loss's gradient: 0 for LR, the official code's 0.25 for JLR by default.
        e_input = (generator_weight * fake_x +
                   (1.0 - generator_weight) * jax.lax.stop_gradient(fake_x))
      (encoded_z, _), stats["encoder"] = _train_forward(
          networks.encoder, state.encoder, eg_params["encoder"], e_input,
          rngs={"latent": encoder_rng})
    real_side = _concat(encoded_z if joint else None, onehot)
    fake_side = _concat(z if joint else None, onehot)
    d_inputs = (interleave_pairs(x, fake_x),)
    if real_side is not None:
      d_inputs += (interleave_pairs(real_side, fake_side),)
    logits, stats["discriminator"] = _train_forward(
        networks.discriminator, state.discriminator, d_params, *d_inputs)
    logits = logits.reshape(-1, 2)
    real_logits, fake_logits = logits[:, 0], logits[:, 1]
    d_loss = losses.discriminator_loss(real_logits, fake_logits, config.loss)
    eg_loss = losses.generator_encoder_loss(real_logits, fake_logits, config.loss)
    metrics = {"d_loss": d_loss, "eg_loss": eg_loss,
               "real_logit": jnp.mean(real_logits), "fake_logit": jnp.mean(fake_logits)}
    if regress:
      regression = losses.latent_regression_loss(encoded_z, z, config.latent_prior)
      metrics["latent_regression_loss"] = regression
      eg_loss = eg_loss + regression
    if r1_weight:
      real_inputs = (x,) if real_side is None else (x, jax.lax.stop_gradient(real_side))
      penalty = losses.r1_penalty(
          lambda *inputs: _train_forward(networks.discriminator, state.discriminator,
                                         d_params, *inputs)[0], real_inputs)
      metrics["r1_penalty"] = penalty
      d_loss = d_loss + 0.5 * r1_weight * penalty
    if has_encoder:
      # The spread of E(x) over the batch: near zero means the encoder has collapsed.
      metrics["encoder_std"] = jnp.mean(jnp.std(encoded_z, axis=0))
    return (d_loss, eg_loss), (stats, metrics)

  def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
    x, onehot = _split_batch(batch, num_classes)
    x = normalise(x)
    z_rng, encoder_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
    z = sample_prior(z_rng, (x.shape[0], config.latent_dim), config.latent_prior)
    z = jax.lax.with_sharding_constraint(z, batch_sharding)
    d_params = state.discriminator.params
    eg_params = {"generator": state.generator.params}
    if has_encoder:
      eg_params["encoder"] = state.encoder.params
    run = functools.partial(forward, state=state, x=x, z=z, onehot=onehot,
                            encoder_rng=encoder_rng)

    if config.update_mode == "simultaneous":
      (d_loss, eg_loss), pullback, (stats, metrics) = jax.vjp(run, d_params, eg_params,
                                                              has_aux=True)
      d_grads, _ = pullback((jnp.ones_like(d_loss), jnp.zeros_like(eg_loss)))
      _, eg_grads = pullback((jnp.zeros_like(d_loss), jnp.ones_like(eg_loss)))
      discriminator = _update(state.discriminator, d_grads, optimizers["discriminator"],
                              stats["discriminator"])
    else:
      def d_objective(dp):
        (d_loss, _), aux = run(dp, eg_params)
        return d_loss, aux
      d_grads, (stats, metrics) = jax.grad(d_objective, has_aux=True)(d_params)
      discriminator = _update(state.discriminator, d_grads, optimizers["discriminator"],
                              stats["discriminator"])

      def eg_objective(egp):
        (_, eg_loss), aux = run(discriminator.params, egp)
        return eg_loss, aux
      eg_grads, (stats, eg_metrics) = jax.grad(eg_objective, has_aux=True)(eg_params)
      metrics = {**metrics, "eg_loss": eg_metrics["eg_loss"]}

    # Gradient norms are logged, and so checked for NaN/inf before any checkpoint is saved.
    metrics = {**metrics, "d_grad_norm": optax.tree.norm(d_grads),
               "eg_grad_norm": optax.tree.norm(eg_grads)}
    new_state = state.replace(
        step=state.step + 1,
        generator=_update(state.generator, eg_grads["generator"], optimizers["generator"],
                          stats["generator"]),
        discriminator=discriminator,
    )
    if has_encoder:
      new_state = new_state.replace(encoder=_update(
          state.encoder, eg_grads["encoder"], optimizers["encoder"], stats["encoder"]))
    return update_ema(new_state, config.ema_decay, config.ema_start_step), metrics

  return sharding.jit_update(train_step, batch_sharding, mesh)


def _make_autoencoder_step(config: ml_collections.ConfigDict, networks: Networks,
                           optimizers: dict[str, optax.GradientTransformation], mesh: Mesh,
                           normalise: Callable[[jax.Array], jax.Array]):
  """The autoencoder baseline of BiGAN's Table 1: E and G trained on ||x - G(E(x))||_p.

  The same networks as the adversarial run; D is carried in the state but never updated.
  """
  def train_step(state: TrainState, x: jax.Array) -> tuple[TrainState, dict]:
    x = normalise(x)
    encoder_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(eg_params):
      (z, _), e_stats = _train_forward(networks.encoder, state.encoder, eg_params["encoder"],
                                       x, rngs={"latent": encoder_rng})
      x_hat, g_stats = _train_forward(networks.generator, state.generator,
                                      eg_params["generator"], z)
      loss = losses.reconstruction_loss(x, x_hat, config.reconstruction_loss)
      metrics = {"reconstruction_loss": loss, "encoder_std": jnp.mean(jnp.std(z, axis=0))}
      return loss, ({"generator": g_stats, "encoder": e_stats}, metrics)

    eg_params = {"generator": state.generator.params, "encoder": state.encoder.params}
    grads, (stats, metrics) = jax.grad(loss_fn, has_aux=True)(eg_params)
    metrics["eg_grad_norm"] = optax.tree.norm(grads)
    new_state = state.replace(
        step=state.step + 1,
        generator=_update(state.generator, grads["generator"], optimizers["generator"],
                          stats["generator"]),
        encoder=_update(state.encoder, grads["encoder"], optimizers["encoder"],
                        stats["encoder"]))
    return update_ema(new_state, config.ema_decay, config.ema_start_step), metrics

  return sharding.jit_update(train_step, sharding.batch_sharded(mesh), mesh)
