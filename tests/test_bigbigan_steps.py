"""The BigBiGAN update on tiny networks: D steps per E/G step, the same result on 1 and 8
devices, the state that advances, and the high-resolution encoder's pooled D input."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigbigan import bigbigan_steps, optimizers as optimizers_lib, sharding
from bigbigan.errors import ConfigError
from bigbigan.models.networks import build_networks
from bigbigan.state import NetworkState
from conftest import REPO, apply_overrides, load_config

def _tiny_config(**overrides):
  # configs/biggan.py:tiny: E sees 64 pixels, G and D 32, so D's real images are E's,
  # 2x2 average-pooled.
  return apply_overrides(load_config(f"{REPO}/configs/biggan.py:tiny"), overrides)


def _images(config, seed=0):
  side = config.encoder.resolution
  return np.random.default_rng(seed).integers(
      0, 256, (config.d_steps, config.batch_size, side, side, 3), dtype=np.uint8)


def _run(config, devices, steps=1):
  state, step = bigbigan_steps.create_state_and_step(config, sharding.make_mesh(devices))
  initial = jax.device_get(state)  # Before the step, which donates the state's buffers.
  history = []
  for i in range(steps):
    state, metrics = step(state, _images(config, seed=i))
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history, initial


@pytest.fixture(scope="module")
def two_d_steps():
  config = _tiny_config()
  assert config.d_steps == 2
  return config, _run(config, jax.devices())


def _adam_count(network_state) -> int:
  counts = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(network_state.opt_state)
            if "count" in jax.tree_util.keystr(path)]
  return int(counts[0])


def test_two_discriminator_updates_per_encoder_generator_update(two_d_steps):
  config, (state, history, _) = two_d_steps
  assert int(state.step) == 1
  assert _adam_count(state.discriminator) == 2
  assert _adam_count(state.generator) == _adam_count(state.encoder) == 1
  metrics = history[0]
  for name in ("d_loss", "eg_loss", "orthogonal_regularisation", "encoder_std",
               "real_score_x", "real_score_z", "real_score_xz", "fake_score_xz"):
    assert np.isfinite(metrics[name]), name
  assert metrics["orthogonal_regularisation"] > 0.0
  # The EMA started from the params and moved with them.
  ema_kernel = state.ema["generator"]["conv_out"]["kernel"]
  assert not np.allclose(ema_kernel, 0.0)


def test_batch_norm_and_spectral_state_advance(two_d_steps):
  _, (state, _, fresh) = two_d_steps
  for network in ("generator", "encoder"):
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b),
                         getattr(state, network).batch_stats,
                         getattr(fresh, network).batch_stats)
    assert all(jax.tree.leaves(moved)), network
  # Spectral norm's vectors travel in their own collection, in float32. (Their values barely
  # move in one step from an orthogonal init, whose singular values are all 1; the layer
  # tests check the power iteration itself.)
  for network in ("generator", "discriminator"):
    spectral = jax.tree.leaves(getattr(state, network).spectral)
    assert spectral and all(leaf.dtype == np.float32 for leaf in spectral), network
  assert not state.encoder.spectral  # E has no spectral norm.


def test_eight_devices_equal_one(two_d_steps):
  config, (eight, history8, _) = two_d_steps
  one, history1, _ = _run(config, jax.devices()[:1])
  for name in ("d_loss", "eg_loss", "encoder_std", "d_grad_norm", "eg_grad_norm"):
    assert history8[0][name] == pytest.approx(history1[0][name], rel=1e-4, abs=1e-6), name
  # Adam's first step (beta1 = 0) moves each weight by about lr * sign(gradient): a gradient
  # within round-off of 0 may take either sign, so the params agree to 2 lr.
  lr = config.optimizer.generator_learning_rate
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=2.01 * lr),
               eight.generator.params, one.generator.params)


def test_discriminator_sees_the_pooled_encoder_images():
  x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
  pooled = bigbigan_steps.to_discriminator_resolution(x, 2)
  np.testing.assert_allclose(pooled, np.asarray(x).reshape(2, 2, 2, 2, 2, 3).mean((2, 4)))
  assert bigbigan_steps.to_discriminator_resolution(x, 4) is x
  np.testing.assert_allclose(bigbigan_steps.normalise_images(jnp.array([0, 255], jnp.uint8)),
                             [-1.0, 1.0])


def test_conditional_is_refused():
  config = _tiny_config(num_classes=10)
  networks = build_networks(config)
  with pytest.raises(ConfigError, match="unconditional"):
    bigbigan_steps.make_bigbigan_train_step(
        config, networks, optimizers_lib.make_optimizers(config), sharding.make_mesh())


def test_benchmark_reports_every_field():
  from bigbigan import benchmark  # pylint: disable=g-import-not-at-top
  results = benchmark.benchmark(_tiny_config(), steps=1, peak_tflops=1.0)
  assert set(results) == {
      "device", "devices", "batch_size", "d_steps", "compute_dtype", "compile_seconds",
      "median_step_seconds", "images_per_second", "images_per_second_per_device",
      "flops_per_step", "tflops_per_second_per_device", "mfu", "finite"}
  assert results["devices"] == 8 and results["finite"]
  assert results["images_per_second"] == pytest.approx(
      2 * 16 / results["median_step_seconds"])
  assert results["mfu"] == pytest.approx(results["tflops_per_second_per_device"] / 1.0)
  assert results["flops_per_step"] > 1e8
  with pytest.raises(ConfigError, match="does not divide over 8 devices"):
    benchmark.benchmark(_tiny_config(batch_size=12), steps=1)


class _Normalised(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    return nn.BatchNorm(use_running_average=not train, momentum=0.0, use_scale=False,
                        use_bias=False)(x)


def test_per_device_batch_norm_uses_each_shard_statistics():
  # Eight shards with different means: per device, each is normalised by its own statistics.
  x = jnp.repeat(jnp.arange(8.0), 4)[:, None] * 2.0 + jax.random.normal(
      jax.random.PRNGKey(0), (32, 1))
  module = _Normalised()
  variables = module.init(jax.random.PRNGKey(0), x, train=False)
  network = NetworkState(params={}, opt_state=(), batch_stats=variables["batch_stats"])
  mesh = sharding.make_mesh()

  def run(per_device_mesh):
    return jax.jit(lambda x: bigbigan_steps.run_network(
        module, network, {}, x, per_device_mesh=per_device_mesh))(x)

  (global_out, global_net), (local_out, local_net) = run(None), run(mesh)
  xs = np.asarray(x, np.float64).reshape(8, 4)
  np.testing.assert_allclose(global_out[:, 0], ((xs - xs.mean()) / np.sqrt(
      xs.var() + 1e-5)).ravel(), rtol=1e-4, atol=1e-4)
  local = (xs - xs.mean(1, keepdims=True)) / np.sqrt(xs.var(1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(local_out[:, 0], local.ravel(), rtol=1e-4, atol=1e-4)
  # The running mean is the same either way (the mean of equal shards' means); the running
  # variance per device misses the spread between the shards' means.
  stats = lambda net: net.batch_stats["BatchNorm_0"]
  np.testing.assert_allclose(stats(local_net)["mean"], stats(global_net)["mean"], rtol=1e-5)
  np.testing.assert_allclose(stats(global_net)["var"], xs.var(), rtol=1e-4)
  np.testing.assert_allclose(stats(local_net)["var"], xs.var(1).mean(), rtol=1e-4)
  # On one device the two scopes agree.
  one = sharding.make_mesh(jax.devices()[:1])
  single = jax.jit(lambda x: bigbigan_steps.run_network(module, network, {}, x,
                                                        per_device_mesh=one))(x)
  np.testing.assert_allclose(single[0], global_out, rtol=1e-5, atol=1e-6)


def test_per_device_batch_norm_step(two_d_steps):
  config, (global_state, global_history, _) = two_d_steps
  config = apply_overrides(config.copy_and_resolve_references(),
                           {"batch_norm_scope": "per_device"})
  state, history, _ = _run(config, jax.devices())
  assert all(np.isfinite(v) for v in history[0].values())
  # The generator's BN statistics now come from single-example shards: they differ.
  differs = jax.tree.map(lambda a, b: not np.allclose(a, b), state.generator.batch_stats,
                         global_state.generator.batch_stats)
  assert any(jax.tree.leaves(differs))
  with pytest.raises(ConfigError, match="batch_norm_scope='device'"):
    bigbigan_steps.make_bigbigan_train_step(
        _tiny_config(batch_norm_scope="device"), build_networks(config),
        optimizers_lib.make_optimizers(config), sharding.make_mesh())
