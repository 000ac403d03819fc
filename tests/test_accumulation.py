"""Gradient accumulation in the BigBiGAN update (`config.accumulation_steps`).

- Without BatchNorm, on 8 devices, k = 4 micro-batches give the whole batch's update (SGD,
  so every leaf of G, E and D must agree to float32 rounding), with two D steps.
- With BatchNorm per device, on 8 devices, k = 2 gives the reference's update with each
  device's rows of each micro-batch normalised alone.
- With BatchNorm, on one device, k = 4 gives the update of test_bigbigan_update_reference.py's
  reference run by hand over the 4 micro-batches, each normalised by its own statistics,
  their gradients averaged.
- XLA's peak temporary memory falls with the micro-batch, and splitting the batch into
  micro-batches adds no collective to the compiled program (the split moves no data).
- The config's field is checked.

The tiny networks (configs/biggan.py:tiny) have BatchNorm in G and E with no switch to turn
it off, so the first test removes it for the test alone: an `nn.intercept_methods`
interceptor, active while the update is traced, makes every BatchNorm the identity (G's
conditional gains and biases stay), which leaves BN-free networks with the same params.
"""


import flax.linen as nn
import jax
import numpy as np
import pytest

from bigbigan import families, sharding
from bigbigan.errors import ConfigError
from bigbigan.families.bigbigan import build_networks
from conftest import REPO, apply_overrides, load_config, load_script
import test_bigbigan_update_reference as reference

K = 4
# 8 devices, 4 micro-batches of one example per device: the smallest batch that splits.
BATCH = 32


def _without_batch_norm(next_fun, args, kwargs, context):
  """Makes every nn.BatchNorm return its input (the networks become BatchNorm-free)."""
  if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
    return args[0]
  return next_fun(*args, **kwargs)


def _run(config, state, images, accumulation_steps, devices=None):
  """One iteration of the update on `devices` (all 8 by default), (state, metrics) on the
  host."""
  config = apply_overrides(config.copy_and_resolve_references(),
                           {"accumulation_steps": accumulation_steps})
  result = reference.run_update(config, build_networks(config), state, images,
                                devices or jax.devices())
  jax.block_until_ready(result)
  return result


def _setup(**overrides):
  config = reference.small_config(batch_size=BATCH, **overrides)
  return config, reference.initial_state(config, build_networks(config))


# Without BatchNorm, k micro-batches and the whole batch sum the same per-example gradients
# in other orders: measured (test_bigbigan_update_reference.SEED) changes within 3.5e-4 of each
# leaf's largest change, values within 1e-5 of themselves plus 1e-6. A bug (a sum over the
# micro-batches instead of the mean, an update per micro-batch) moves the changes by 100% and
# more.
RTOL, ATOL, CHANGE_RTOL = 1e-5, 1e-6, 1e-3
# With BatchNorm, on one device (the 8-device layout is the test above's; with BatchNorm an
# 8-device program rounds differently from the reference and small-batch BatchNorm, 8
# examples per micro-batch, amplifies it to ~5e-3, as for 8 devices = 1 in
# test_bigbigan_update.py): measured changes within 1.4e-4 of the reference. The whole
# batch's statistics instead of each micro-batch's move the changes by over 300%.
BATCH_NORM_RTOL, BATCH_NORM_ATOL, BATCH_NORM_CHANGE_RTOL = 1e-3, 1e-5, 1e-3
# Per-device BatchNorm on 8 devices against the per-shard reference, BatchNorm over 2
# examples: rounding amplified as above; measured values within 7.7e-3 of themselves and
# changes within 1.8e-2 (k = 1 at this batch, 4 examples per device: 9e-4 and 2e-3). A
# wrong structure moves them by 200% and more (measured: 4 shards instead of 8, no
# micro-batches, 4 micro-batches instead of 2). Hence values within 2e-2 of themselves plus
# 5e-4 (E's root kernel near its zeros: 1.3e-4), changes within 5e-2.
PER_DEVICE_RTOL, PER_DEVICE_ATOL, PER_DEVICE_CHANGE_RTOL = 2e-2, 5e-4, 5e-2


@pytest.mark.slow
@pytest.mark.parametrize("d_steps", [2])  # Two D steps: each accumulates, then E/G does.
def test_micro_batches_equal_the_whole_batch_without_batch_norm(d_steps):
  config, state = _setup(d_steps=d_steps)
  images = reference.random_images(config)
  with nn.intercept_methods(_without_batch_norm):  # Active while the updates are traced.
    whole, whole_metrics = _run(config, state, images, 1)
    micro, micro_metrics = _run(config, state, images, K)
  for network in reference.NETWORKS:  # BatchNorm-free: no statistic moved.
    jax.tree.map(np.testing.assert_array_equal, getattr(micro, network).batch_stats,
                 getattr(state, network).batch_stats)
  reference.assert_states_close(micro, whole, state, RTOL, ATOL, CHANGE_RTOL,
                                f"d_steps {d_steps}, k={K} vs 1")
  # Losses and scores are means over examples: the micro-batches' mean is the batch's.
  for name, value in whole_metrics.items():
    if name != "encoder_std":  # A spread over each micro-batch, not over the batch.
      assert micro_metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


@pytest.mark.slow(seconds=74)
def test_micro_batches_with_batch_norm_equal_the_reference_by_hand():
  # Each micro-batch normalised by its own statistics, the running averages carried from
  # one micro-batch to the next, spectral norm advanced once; the gradients averaged.
  config, state = _setup()
  images = reference.random_images(config)
  expected = jax.device_get(reference.make_reference(config, build_networks(config),
                                                     micro_batches=K)(state, images))
  actual, metrics = _run(config, state, images, K, devices=jax.devices()[:1])
  assert all(np.isfinite(v) for v in metrics.values())
  reference.assert_states_close(actual, expected, state, BATCH_NORM_RTOL, BATCH_NORM_ATOL,
                                BATCH_NORM_CHANGE_RTOL, f"k={K} vs the reference by hand")


@pytest.mark.slow(seconds=71)
def test_micro_batches_with_per_device_batch_norm_equal_the_reference_by_hand():
  # BatchNorm per device and per micro-batch: each device's rows of each micro-batch (two
  # examples: 32 over 8 devices in 2 micro-batches) normalised by their own statistics. The
  # reference splits each micro-batch of the strided split into the devices' 8 contiguous
  # shards, which is where the update's micro-batches keep them.
  config, state = _setup(batch_norm_scope="per_device")
  images = reference.random_images(config)
  expected = jax.device_get(reference.make_reference(
      config, build_networks(config), shards=8, micro_batches=2)(state, images))
  actual, metrics = _run(config, state, images, 2)
  assert all(np.isfinite(v) for v in metrics.values())
  reference.assert_states_close(actual, expected, state, PER_DEVICE_RTOL, PER_DEVICE_ATOL,
                                PER_DEVICE_CHANGE_RTOL, "per device, k=2 vs the reference by hand")


@pytest.mark.slow
def test_memory_falls_with_the_micro_batch_and_no_data_moves():
  # 16 examples per device: activations dominate the tiny networks' temporaries.
  config = apply_overrides(load_config(f"{REPO}/configs/biggan.py:tiny"), {"batch_size": 128})
  mesh = sharding.make_mesh()
  measure = load_script("accumulation_memory").measure
  whole, micro = measure(config, mesh, 1), measure(config, mesh, K)
  print("k=1:", whole, f"\nk={K}:", micro)
  assert micro["temp_bytes"] < whole["temp_bytes"] / 2.5
  # The strided split keeps every row on its device: the micro-batch program moves data
  # between devices exactly as the whole batch's does (a contiguous split adds all-to-alls
  # and collective-permutes). All-reduces, the BatchNorm and gradient sums, are not
  # compared: how many XLA emits depends on where it places them in the nested loops (the
  # D steps' scan and the micro-batches').
  for op in ("all-to-all", "all-gather", "collective-permute"):
    assert micro[op] == whole[op], op


def _bigbigan_config(**overrides):
  return apply_overrides(load_config(f"{REPO}/configs/bigbigan_base.py:tiny"), overrides)


@pytest.mark.parametrize("value, message", [
    (0, "must be a positive integer"),
    (-2, "must be a positive integer"),
    (3, "does not divide the per-device batch 4"),
    (8, "does not divide the per-device batch 4"),
])
def test_config_validation_refuses_bad_accumulation(value, message):
  config = _bigbigan_config(accumulation_steps=value)
  assert config.batch_size == 32
  with pytest.raises(ConfigError, match=f"config.accumulation_steps={value!r}.*{message}"):
    families.validate_config(config, num_devices=8)
  families.validate_config(_bigbigan_config(accumulation_steps=4), num_devices=8)


def test_config_validation_refuses_accumulation_for_the_mlp_networks(tiny_config):
  config = tiny_config()
  families.validate_config(config, num_devices=8)
  config.accumulation_steps = 2
  with pytest.raises(ConfigError, match="network='biggan'"):
    families.validate_config(config, num_devices=8)
