"""The MLP family's jitted update (families/bigan_update.py): identical on 1 and 8 devices, and
equal to a plain reference update."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigbigan import losses
from bigbigan import optimizers as optimizers_lib
from bigbigan import sharding
from bigbigan.data.toy import Mixture
from bigbigan.families import bigan_predict
from bigbigan.families import bigan_update
from bigbigan.families.bigan import init_train_state
from bigbigan.families.common import sample_prior
from bigbigan.models.networks import build_mlp_networks


def _setup(config, num_classes=0):
  networks = build_mlp_networks(config, data_dim=2)
  optimizers = optimizers_lib.make_optimizers(config)
  init = functools.partial(init_train_state, networks, optimizers, data_dim=2,
                           latent_dim=config.latent_dim,
                           joint=bigan_update.joint_discriminator(config, networks),
                           num_classes=num_classes, ema=config.ema_decay > 0)
  batches = Mixture.from_config(config).train_batches(config.batch_size, config.seed,
                                                      process_index=0, process_count=1)
  batches = [next(batches) for _ in range(3)]
  if num_classes:  # Any labels will do for a conditional model's arithmetic.
    batches = [(x, np.arange(len(x)) % num_classes) for x in batches]
  return networks, optimizers, init, batches


def _train(config, devices, num_steps=3, num_classes=0):
  networks, optimizers, init, batches = _setup(config, num_classes)
  mesh = sharding.make_mesh(devices)
  state = jax.jit(init, out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(0))
  train_step = bigan_update.make_train_step(config, networks, optimizers, mesh,
                                            num_classes=num_classes)
  history = []
  for batch in batches[:num_steps]:
    batch = jax.tree.map(lambda rows: sharding.to_global_batch(rows, mesh), batch)
    state, metrics = train_step(state, batch)
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


@pytest.mark.parametrize("variant, overrides, num_classes", [
    # BiGAN with BatchNorm everywhere: BN statistics must be over the global batch.
    ("bigan", dict(update_mode="simultaneous", generator__batch_norm=True,
                   encoder__batch_norm=True, discriminator__batch_norm=True), 0),
    # ALI (random encoder noise, sharded) with alternating updates.
    ("ali", dict(update_mode="alternating", generator__hidden_sizes=(16, 16, 16)), 0),
    ("gan", {}, 0),
    # The latent regressor baselines, and a conditional BiGAN (labels sharded with x).
    ("bigan", dict(objective="joint_latent_regressor", generator__batch_norm=True), 0),
    ("bigan", dict(generator__batch_norm=True), 3),
])
@pytest.mark.slow
def test_eight_devices_equal_one_device(tiny_config, variant, overrides, num_classes):
  config = tiny_config(variant, **overrides)
  state_8, metrics_8 = _train(config, jax.devices(), num_classes=num_classes)
  state_1, metrics_1 = _train(config, jax.devices()[:1], num_classes=num_classes)
  for m8, m1 in zip(metrics_8, metrics_1):
    for name in m1:
      np.testing.assert_allclose(m8[name], m1[name], rtol=1e-5, atol=1e-6, err_msg=name)
  assert int(state_8.step) == int(state_1.step) == 3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               state_8, state_1)
  # And the networks really trained.
  assert not np.allclose(metrics_1[0]["d_loss"], metrics_1[-1]["d_loss"])


@pytest.mark.parametrize("update_mode", ["simultaneous", "alternating"])
@pytest.mark.slow
def test_step_equals_reference_update(tiny_config, update_mode):
  """One step equals plain jax.grad calls on the D and E/G losses.

  Simultaneous: both gradients at the current parameters. Alternating: D first, then the
  E/G gradient against the updated D.
  """
  config = tiny_config("bigan", update_mode=update_mode)
  networks, _, _, batches = _setup(config)
  # Plain SGD, so that parameter updates are the gradients themselves (Adam's first step is
  # close to lr * sign(grad) and would hide small gradient errors).
  optimizers = {name: optax.sgd(0.5) for name in ("generator", "encoder", "discriminator")}
  state = jax.jit(functools.partial(init_train_state, networks, optimizers, data_dim=2,
                                    latent_dim=config.latent_dim))(jax.random.PRNGKey(0))
  x = jnp.asarray(batches[0])
  z_rng, _ = jax.random.split(jax.random.fold_in(state.rng, state.step))
  z = sample_prior(z_rng, (x.shape[0], config.latent_dim), config.latent_prior)

  def logits(g_params, e_params, d_params):
    fake_x = networks.generator.apply({"params": g_params}, z, train=True)
    encoded, _ = networks.encoder.apply({"params": e_params}, x, train=True)
    real = networks.discriminator.apply({"params": d_params}, x, encoded, train=True)
    fake = networks.discriminator.apply({"params": d_params}, fake_x, z, train=True)
    return real, fake

  def apply(name, params, grads):
    opt_state = getattr(state, name).opt_state
    return optax.apply_updates(params, optimizers[name].update(grads, opt_state, params)[0])

  g, e, d = state.generator.params, state.encoder.params, state.discriminator.params
  d_grads = jax.grad(lambda dp: losses.discriminator_loss(*logits(g, e, dp), "bigan"))(d)
  new_d = apply("discriminator", d, d_grads)
  d_seen_by_eg = d if update_mode == "simultaneous" else new_d
  g_grads, e_grads = jax.grad(
      lambda gp, ep: losses.generator_encoder_loss(*logits(gp, ep, d_seen_by_eg), "bigan"),
      argnums=(0, 1))(g, e)
  expected = {"generator": apply("generator", g, g_grads),
              "encoder": apply("encoder", e, e_grads),
              "discriminator": new_d}
  g_grads_at_old_d = jax.grad(
      lambda gp: losses.generator_encoder_loss(*logits(gp, e, d), "bigan"))(g)
  generator_at_old_d = apply("generator", g, g_grads_at_old_d)

  mesh = sharding.make_mesh(jax.devices()[:1])
  new_state, _ = bigan_update.make_train_step(config, networks, optimizers, mesh)(state, x)
  for name, params in expected.items():
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 getattr(new_state, name).params, params)
  # The two modes really differ: G's update depends on which D it sees.
  same_as_simultaneous = np.allclose(generator_at_old_d["out"]["kernel"],
                                     new_state.generator.params["out"]["kernel"],
                                     rtol=1e-6, atol=1e-8)
  assert same_as_simultaneous == (update_mode == "simultaneous")


def test_stochastic_encoder_samples_around_its_mean(tiny_config):
  config = tiny_config("ali")
  networks, _, init, batches = _setup(config)
  state = jax.jit(init)(jax.random.PRNGKey(0))
  x = jnp.asarray(np.repeat(batches[0][:1], 4096, axis=0))  # One x, many noise draws.
  z, z_mean = networks.encoder.apply({"params": state.encoder.params}, x, train=False,
                                     rngs={"latent": jax.random.PRNGKey(1)})
  np.testing.assert_allclose(np.mean(z, axis=0), z_mean[0], atol=0.1)
  assert np.all(np.std(z, axis=0) > 0.05)  # It is stochastic...
  np.testing.assert_allclose(np.std(z_mean, axis=0), 0.0, atol=1e-6)  # ...around one mean.


@pytest.mark.slow
def test_latent_regressor_trains_e_on_samples_and_leaves_the_gan_alone(tiny_config):
  """LR: E regresses z from G(z) and its loss never reaches G, so G and D take exactly the
  plain GAN's steps. JLR: the regression loss also trains G."""
  devices = jax.devices()[:1]
  gan, _ = _train(tiny_config("gan"), devices, num_steps=2)
  runs = {objective: _train(tiny_config("bigan", objective=objective), devices, num_steps=2)
          for objective in ("latent_regressor", "joint_latent_regressor")}
  (regressor, regressor_metrics), (joint, _) = runs.values()
  for name in ("generator", "discriminator"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 getattr(regressor, name).params, getattr(gan, name).params)
  assert not np.allclose(joint.generator.params["out"]["kernel"],
                         gan.generator.params["out"]["kernel"], rtol=1e-6, atol=1e-8)
  # D of a latent regressor judges x alone, like the GAN's, and E really trained.
  assert "side_0" not in regressor.discriminator.params
  assert all(np.isfinite(m["latent_regression_loss"]) for m in regressor_metrics)
  initial_encoder = jax.device_get(_train(tiny_config("bigan", objective="latent_regressor"),
                                          devices, num_steps=0)[0].encoder.params)
  assert not np.allclose(initial_encoder["mean"]["kernel"],
                         regressor.encoder.params["mean"]["kernel"])


@pytest.mark.slow
def test_ema_follows_the_params_and_serves_inference(tiny_config):
  # Averaging starts after step 1: the EMA after steps 1, 2, 3 is p1, then halfway to p2
  # and p3 in turn.
  config = tiny_config("bigan", ema_decay=0.5, ema_start_step=1)
  devices = jax.devices()[:1]
  params = [jax.device_get(_train(config, devices, num_steps=k)[0]) for k in range(1, 4)]
  live = lambda state: {"generator": state.generator.params, "encoder": state.encoder.params}
  jax.tree.map(np.testing.assert_array_equal, params[0].ema, live(params[0]))
  expected = live(params[0])
  for state in params[1:]:
    expected = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * p, expected, live(state))
  final = params[-1]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               final.ema, expected)
  assert not np.allclose(final.ema["generator"]["out"]["kernel"],
                         final.generator.params["out"]["kernel"])
  # Sampling uses the averaged G.
  mesh = sharding.make_mesh(devices)
  networks = build_mlp_networks(config, data_dim=2)
  z = jnp.ones((4, config.latent_dim))
  predict = bigan_predict.make_predict_fns(config, networks, mesh, normalise=lambda x: x)
  sample = predict.generate(final, z)
  expected_sample = networks.generator.apply({"params": final.ema["generator"]}, z,
                                             train=False)
  np.testing.assert_allclose(sample, expected_sample, rtol=1e-6)
