"""The BigBiGAN update on tiny networks: D steps per E/G step, the same result on 1 and 8
devices (SGD, so that every leaf must agree to float32 rounding), BatchNorm per device
against a per-shard reference (test_bigbigan_update_reference.py), the state that advances, the
high-resolution encoder's pooled D input and the benchmark's figures."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigbigan import benchmark, families, optimizers as optimizers_lib, sharding
from bigbigan.errors import ConfigError
from bigbigan.families import bigbigan as bigbigan_family
from bigbigan.families import bigbigan_update, common
from bigbigan.state import NetworkState
from conftest import REPO, apply_overrides, load_config
import test_bigbigan_update_reference as reference

KEY = jax.random.PRNGKey(0)

def _tiny_config(**overrides):
  # configs/biggan.py:tiny: E sees 64 pixels, G and D 32, so D's real images are E's,
  # 2x2 average-pooled.
  return apply_overrides(load_config(f"{REPO}/configs/biggan.py:tiny"), overrides)


def _images(config, seed=0):
  side = config.encoder.resolution
  return np.random.default_rng(seed).integers(
      0, 256, (config.d_steps, config.batch_size, side, side, 3), dtype=np.uint8)


def _run(config, devices, steps=1):
  state, step = families.create_state_and_update(config, sharding.make_mesh(devices))
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_scanned_d_steps_equal_the_unrolled_ones():
  """The update's lax.scan over its D steps against the same steps written out one after
  another (the update before the scan): three D steps, each with its own images, z and
  noise, then the E/G step, with SGD so that every leaf (parameters, BatchNorm and
  spectral-norm state) is the same function of the initial state in both programs and must
  agree to float32 rounding (both are compiled whole, so XLA may fuse and round the E/G
  step's sums differently: ~1e-6 measured)."""
  config = reference.small_config(d_steps=3)
  networks = bigbigan_family.build_networks(config)
  initial = reference.initial_state(config, networks)
  images = reference.random_images(config)
  mesh = sharding.make_mesh(jax.devices()[:1])
  results = {}
  for unroll in (False, True):
    step = bigbigan_update.make_bigbigan_train_step(config, networks,
                                                    reference.sgd_optimizers(), mesh, unroll)
    state = jax.device_put(initial, sharding.replicated(mesh))
    results[unroll] = jax.device_get(step(state, jax.device_put(
        images, bigbigan_update.image_sharding(mesh))))
  (scanned, scanned_metrics), (unrolled, unrolled_metrics) = results[False], results[True]
  reference.assert_states_close(scanned, unrolled, initial, 1e-5, 1e-6, 1e-3,
                                "scanned vs unrolled D steps")
  for name, value in unrolled_metrics.items():
    assert scanned_metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_cpu_writes_out_the_d_steps_and_accelerator_programs_scan_them():
  """On a CPU mesh the default update writes the D steps out (XLA:CPU runs a loop's body
  several times slower: docs/benchmarks.md, "The D steps' loop"); the accelerators'
  program, which the memory predictions compile, keeps them under one scan."""
  config = reference.small_config(d_steps=2)
  networks = bigbigan_family.build_networks(config)
  mesh = sharding.make_mesh(jax.devices()[:1])
  assert mesh.devices.flat[0].platform == "cpu"
  state = jax.eval_shape(bigbigan_family.state_initializer(config, networks),
                         jax.random.PRNGKey(0))
  side = config.encoder.resolution
  images = jax.ShapeDtypeStruct((config.d_steps, config.batch_size, side, side, 3), jnp.uint8)
  loops = {}
  for unroll in (None, False):
    update = bigbigan_family.make_update(config, networks, mesh, unroll_d_steps=unroll)
    loops[unroll] = update.lower(state, images).as_text().count("stablehlo.while")
  # XLA's lowering has loops of its own (4 here, in both programs); the scan adds one.
  assert loops[False] == loops[None] + 1, loops


# 8 devices against 1 device, and per-device BatchNorm against its per-shard reference: the
# same computation in other orders (moments and batch sums per shard, then across shards),
# whose float32 rounding grows through small-batch BatchNorm and two D steps. Measured
# (test_bigbigan_update_reference.SEED, and seeds 3 to 5): every value within 1e-5 of itself plus
# 3e-7 (E's root kernel near its zeros); changes within 3e-4 (8 = 1) and 2e-3 (per device:
# D's spectral sigmas, which move little) of each leaf's largest change. Hence rtol 1e-5,
# atol 1e-6 (values near 0: G's conv biases before BatchNorm have a zero gradient and 1e-9
# rounding changes), and the changes within 1e-2 of themselves: a wrong per-device mean, a
# missing cross-device sum or a per-shard draw moves them by far more.
MULTI_DEVICE_RTOL, MULTI_DEVICE_ATOL, MULTI_DEVICE_CHANGE_RTOL = 1e-5, 1e-6, 1e-2


@pytest.mark.slow
def test_eight_devices_equal_one():
  run = reference.one_device_iteration("tiny")
  config = run["config"]
  assert config.batch_norm_scope == "global" and config.batch_size % 8 == 0
  eight, metrics = reference.run_update(config, run["networks"], run["initial"], run["images"],
                                        jax.devices())
  reference.assert_states_close(eight, run["update"], run["initial"], MULTI_DEVICE_RTOL,
                                MULTI_DEVICE_ATOL, MULTI_DEVICE_CHANGE_RTOL, "8 devices vs 1")
  for name, value in run["metrics"].items():
    assert metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_discriminator_sees_the_pooled_encoder_images():
  x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
  pooled = common.to_discriminator_resolution(x, 2)
  np.testing.assert_allclose(pooled, np.asarray(x).reshape(2, 2, 2, 2, 2, 3).mean((2, 4)))
  assert common.to_discriminator_resolution(x, 4) is x
  np.testing.assert_allclose(common.normalise_images(jnp.array([0, 255], jnp.uint8)),
                             [-1.0, 1.0])


def test_conditional_is_refused():
  config = _tiny_config(num_classes=10)
  networks = bigbigan_family.build_networks(config)
  with pytest.raises(ConfigError, match="unconditional"):
    bigbigan_update.make_bigbigan_train_step(
        config, networks, optimizers_lib.make_optimizers(config), sharding.make_mesh())


@pytest.mark.slow
def test_benchmark_reports_every_field():
  from bigbigan import benchmark  # pylint: disable=g-import-not-at-top
  config, peak_tflops = _tiny_config(), 2.0
  results = benchmark.benchmark(config, steps=1, peak_tflops=peak_tflops)
  assert set(results) == {
      "device", "devices", "batch_size", "d_steps", "compute_dtype", "compile_seconds",
      "median_step_seconds", "iteration_seconds_on_device", "iteration_seconds_no_prefetch",
      "iteration_seconds_prefetch", "images_per_second", "images_per_second_per_device",
      "flops_per_step", "tflops_per_second_per_device", "mfu", "finite"}
  devices, seconds = 8, results["median_step_seconds"]
  assert results["devices"] == devices and results["finite"] and seconds > 0
  assert (results["batch_size"], results["d_steps"]) == (16, 2)
  # The figures again, from XLA's cost analysis of the same update compiled here: one
  # device's program (the partitioned one), so the FLOPs are one device's share of the step
  # and give the per-device rate without dividing by the device count.
  mesh = sharding.make_mesh()
  state, step = families.create_state_and_update(config, mesh)
  images = jax.ShapeDtypeStruct(_images(config).shape, jnp.uint8,
                                sharding=bigbigan_update.image_sharding(mesh))
  lowered = step.lower(state, images)
  cost = lowered.compile().cost_analysis()
  device_flops = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
  cost = lowered.cost_analysis()  # Before partitioning: the whole step's.
  step_flops = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
  # A device's share: at least 1/8 of the step (the batch work is split; the params' work,
  # spectral norm and the optimizer, is not), and less than the whole.
  assert step_flops / devices <= device_flops < step_flops / 2
  assert results["flops_per_step"] == pytest.approx(device_flops, rel=1e-6)
  tflops = device_flops / seconds / 1e12
  assert results["tflops_per_second_per_device"] == pytest.approx(tflops, rel=1e-6)
  assert results["mfu"] == pytest.approx(tflops / peak_tflops, rel=1e-6)
  images_per_second = config.d_steps * config.batch_size / seconds
  assert results["images_per_second"] == pytest.approx(images_per_second, rel=1e-6)
  assert results["images_per_second_per_device"] == pytest.approx(
      images_per_second / devices, rel=1e-6)
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
    return jax.jit(lambda x: bigbigan_update.run_network(
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
  single = jax.jit(lambda x: bigbigan_update.run_network(module, network, {}, x,
                                                         per_device_mesh=one))(x)
  np.testing.assert_allclose(single[0], global_out, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_per_device_forward_equals_per_shard_reference():
  # E's training forward with BatchNorm per device: each device's shard alone through E
  # (its own moments, its own noise), the running averages the devices' mean.
  run = reference.one_device_iteration("tiny")
  module, encoder = run["networks"].encoder, run["initial"].encoder
  x = common.normalise_images(jnp.asarray(_images(_tiny_config())[0]))
  key = jax.random.PRNGKey(3)
  per_device = jax.jit(lambda encoder, x, key: bigbigan_update.run_network(
      module, encoder, encoder.params, x, rngs={"latent": key},
      per_device_mesh=sharding.make_mesh()))
  out, network = jax.device_get(per_device(encoder, x, key))
  shard = jax.jit(lambda encoder, x, key, shards: reference.network_forward(
      module, encoder, encoder.params, (x,), key, shards), static_argnums=3)
  expected_out, expected = jax.device_get(shard(encoder, x, key, 8))
  global_out, _ = jax.device_get(shard(encoder, x, key, None))
  # Rounding only (a forward has no ReLU-kink jumps): measured up to 1.1e-6 on outputs of
  # magnitude 1, normalised by two examples' moments.
  tolerance = dict(rtol=MULTI_DEVICE_RTOL, atol=1e-5)
  for name in ("z_mean", "z_sample", "avepool_feat"):
    np.testing.assert_allclose(out[name], expected_out[name], err_msg=name, **tolerance)
    # Two examples per shard: their moments are far from the batch's.
    assert not np.allclose(out[name], global_out[name], rtol=1e-2, atol=1e-2), name
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tolerance),
               network.batch_stats, expected.batch_stats)


@pytest.mark.slow
def test_per_device_batch_norm_step():
  # The whole iteration with BatchNorm per device on 8 devices (two examples each) against the
  # reference run shard by shard.
  config = reference.small_config(batch_norm_scope="per_device", batch_size=16)
  networks = bigbigan_family.build_networks(config)
  state, images = reference.initial_state(config, networks), reference.random_images(config)
  expected = jax.device_get(reference.make_reference(config, networks, shards=8)(
      state, images))
  actual, metrics = reference.run_update(config, networks, state, images, jax.devices())
  assert all(np.isfinite(v) for v in metrics.values())
  reference.assert_states_close(actual, expected, state, MULTI_DEVICE_RTOL, MULTI_DEVICE_ATOL,
                                MULTI_DEVICE_CHANGE_RTOL, "per device vs per-shard reference")


def test_unknown_batch_norm_scope_is_refused():
  config = _tiny_config(batch_norm_scope="device")
  with pytest.raises(ConfigError, match="batch_norm_scope='device'"):
    bigbigan_update.make_bigbigan_train_step(
        config, bigbigan_family.build_networks(config),
        optimizers_lib.make_optimizers(config), sharding.make_mesh())


def test_each_d_step_normalises_its_own_images_in_the_compute_dtype():
  # The update's jaxpr converts uint8 images to the compute dtype one D step's batch at a
  # time: never the whole [d_steps, B, R, R, 3] batch, which would stay alive, 4x its bytes in
  # float32, through every D step.
  config = _tiny_config(compute_dtype="bfloat16")
  mesh = sharding.make_mesh(jax.devices()[:1])
  networks = bigbigan_family.build_networks(config)
  state = jax.eval_shape(bigbigan_family.state_initializer(config, networks),
                         jax.random.PRNGKey(0))
  update = bigbigan_family.make_update(config, networks, mesh)
  images = jax.ShapeDtypeStruct(_images(config).shape, jnp.uint8)
  conversions = []

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "convert_element_type" and eqn.invars[0].aval.dtype == jnp.uint8:
        conversions.append((eqn.invars[0].aval.shape, eqn.outvars[0].aval.dtype))
      for sub in jax.core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(jax.make_jaxpr(update)(state, images).jaxpr)
  one_step = images.shape[1:]
  # The D steps' and the E/G step's batches, each on its own, in bfloat16.
  assert conversions and all(c == (one_step, jnp.bfloat16) for c in conversions), conversions


def test_scores_and_latents_stay_float32_under_bfloat16():
  config = _tiny_config(compute_dtype="bfloat16")
  networks = bigbigan_family.build_networks(config)
  side = config.encoder.resolution
  x = jnp.zeros((2, side, side, 3))
  z = jnp.zeros((2, config.latent_dim))
  dtypes = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and context.module.name in (
        "x_head", "z_head", "xz_head", "mean", "scale", "head_0"):
      dtypes[context.module.name] = out.dtype
    return out

  with nn.intercept_methods(record):
    e_vars = networks.encoder.init({"params": KEY, "latent": KEY}, x, train=False)
    encoded = networks.encoder.apply(e_vars, x, train=False, rngs={"latent": KEY})
    x_d = common.to_discriminator_resolution(x, config.resolution)
    d_vars = networks.discriminator.init(KEY, x_d, z, train=False)
    networks.discriminator.apply(d_vars, x_d, z, train=False)
  # E's head computes in bfloat16 (head_0, its first layer), while D's score heads and E's
  # mean and scale layers compute in float32.
  assert dtypes == {"head_0": jnp.bfloat16, **{name: jnp.float32 for name in (
      "x_head", "z_head", "xz_head", "mean", "scale")}}, dtypes
  assert encoded["z_mean"].dtype == encoded["z_stdev"].dtype == jnp.float32


@pytest.mark.slow
def test_the_update_moves_no_rows_between_devices():
  # The tiny update as an accelerator runs it (D steps under lax.scan), on 8 devices: the
  # batch is sharded on `data` and every device holds its real and fake pairs itself
  # (`interleave_pairs`), so no row moves: the collectives are the all-reduces of
  # BatchNorm's statistics and of the gradients, and the all-gathers of the params' updates
  # from the split Adam moments (sharding.state_shardings), one a split param an update. A
  # concatenation of real and fake rows along the sharded axis compiled to 12 all-to-alls
  # and 44 collective-permutes. D's MLPs are 256 wide, so their moments split as the
  # full-size ones do: with the gradients and params left free going into the optimizer,
  # the partitioner carried that split into D's MLP activations (3 all-to-alls and a
  # collective-permute here, 9 and 3 at full size).
  config = _tiny_config(**{"discriminator.latent_width": 256,
                           "discriminator.joint_width": 256})
  compiled, _ = benchmark.compile_update(config, sharding.make_mesh(),
                                         accelerator_program=True)
  counts = benchmark.collective_counts(compiled)
  shapes = jax.eval_shape(bigbigan_family.state_initializer(
      config, bigbigan_family.build_networks(config)), jax.random.PRNGKey(0))
  split = {name: sum(sharding.split_axis(leaf.shape, 8) is not None
                     for leaf in jax.tree.leaves(getattr(shapes, name).params))
           for name in ("generator", "encoder", "discriminator")}
  # An all-gather a split param per update: G's and E's once, D's once a D step (XLA may
  # write the 2 steps' loop out).
  most = split["generator"] + split["encoder"] + config.d_steps * split["discriminator"]
  assert counts["all-reduce"] > 0 and 0 < counts["all-gather"] <= most, (counts, split)
  assert {op: counts[op] for op in ("reduce-scatter", "all-to-all", "collective-permute")} == {
      "reduce-scatter": 0, "all-to-all": 0, "collective-permute": 0}, counts
