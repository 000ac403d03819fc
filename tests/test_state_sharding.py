"""The training state in ZeRO stage-1 layout (`sharding.state_shardings`): Adam's moments and
the EMA split over the devices, the rest replicated.

- Which leaves split, and along which axis.
- On 8 devices, an update with Adam and the EMA split gives every leaf of the replicated
  update (8 devices = 1 is test_bigbigan_update.py's, through the same layout); the update
  returns the state in its layout; its per-device arguments hold 1/8 of the split leaves.

A checkpoint written on 8 devices restoring on 1 and 2 is test_train_bigbigan.py's
test_resumed_run_equals_uninterrupted_run.
"""


import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from bigbigan import families, memory_plan, sharding
from bigbigan.families import bigbigan_update
from bigbigan.state import averaged_params
from mnist_mock import tiny_bigbigan_config
import test_bigbigan_update_reference as reference

SPLIT = PartitionSpec(sharding.DATA_AXIS)


def test_a_leaf_splits_along_its_largest_axis_the_devices_divide():
  mesh = sharding.make_mesh()
  spec = lambda shape: sharding.split_over_devices(shape, mesh).spec  # noqa: E731
  assert spec((3, 3, 64, 128)) == PartitionSpec(None, None, None, sharding.DATA_AXIS)
  assert spec((2048, 96)) == SPLIT
  assert spec((96, 2048)) == PartitionSpec(None, sharding.DATA_AXIS)
  assert spec((130, 1000)) == PartitionSpec(None, sharding.DATA_AXIS)  # 130: not by 8.
  assert spec((129, 129)) == PartitionSpec()  # No axis divides.
  assert spec((64, 64)) == PartitionSpec()  # 4,096 elements: below MIN_SPLIT_ELEMENTS.
  assert spec(()) == PartitionSpec()
  one = sharding.make_mesh(jax.devices()[:1])
  assert sharding.split_over_devices((2048, 96), one).spec == PartitionSpec()


def test_moments_and_ema_split_the_rest_replicated():
  config = tiny_bigbigan_config()
  family = families.of(config)
  shapes = jax.eval_shape(family.state_initializer(config, family.build_networks(config)),
                          jax.random.PRNGKey(0))
  mesh = sharding.make_mesh()
  found = {"split": set(), "replicated": set()}
  for (path, leaf), place in zip(jax.tree_util.tree_leaves_with_path(shapes),
                                 jax.tree.leaves(sharding.state_shardings(shapes, mesh))):
    name = jax.tree_util.keystr(path)
    in_field = name.startswith(".ema") or ".opt_state" in name
    expected = sharding.split_over_devices(leaf.shape, mesh) if in_field else None
    assert place.spec == (expected.spec if in_field else PartitionSpec()), name
    found["split" if SPLIT[0] in place.spec else "replicated"].add(name)
  # The tiny networks have leaves on both sides of the threshold, in both fields.
  assert any(n.startswith(".ema") for n in found["split"])
  assert any(".opt_state" in n for n in found["split"])
  assert any(".opt_state" in n for n in found["replicated"])
  assert not any(".params" in n for n in found["split"])


def _adam_optimizers():
  # eps 1: the step is lr g / (|g| + 1), smooth in g, so that float32 rounding of a
  # near-zero gradient cannot flip the sign of a weight's step as Adam's lr g / |g| would.
  return {name: optax.adam(rate, b1=0.5, eps=1.0)
          for name, rate in reference.LEARNING_RATES.items()}


@pytest.mark.slow
def test_the_split_changes_no_number_and_an_eighth_of_its_bytes_stays(monkeypatch):
  """One update with Adam and the EMA on 8 devices, split and (SPLIT_FIELDS emptied)
  replicated: every leaf the same; the split program's per-device arguments hold 1/8 of the
  split leaves. (8 devices = 1 is test_bigbigan_update.py's, through this same layout.)"""
  config = reference.small_config(ema_decay=0.5, ema_start_step=0)
  networks = families.of(config).build_networks(config)
  optimizers = _adam_optimizers()
  initial = reference.initial_state(config, networks)
  initial = initial.replace(**{
      name: getattr(initial, name).replace(opt_state=optimizers[name].init(
          getattr(initial, name).params)) for name in reference.NETWORKS})
  initial = jax.device_get(initial.replace(ema=averaged_params(initial)))  # Donated copies.
  mesh = sharding.make_mesh()
  images = jax.device_put(reference.random_images(config), bigbigan_update.image_sharding(mesh))
  results, arguments = {}, {}
  for layout, fields in (("split", sharding.SPLIT_FIELDS), ("replicated", ())):
    monkeypatch.setattr(sharding, "SPLIT_FIELDS", fields)
    state = jax.device_put(initial, sharding.state_shardings(initial, mesh))
    step = bigbigan_update.make_bigbigan_train_step(config, networks, optimizers, mesh)
    compiled = step.lower(state, images).compile()
    arguments[layout] = compiled.memory_analysis().argument_size_in_bytes
    state, _ = compiled(state, images)
    assert jax.tree.map(lambda leaf: leaf.sharding, state) == sharding.state_shardings(
        state, mesh)
    results[layout] = jax.device_get(state)
  monkeypatch.undo()
  split_leaves = [jax.tree_util.keystr(path) for path, leaf in
                  jax.tree_util.tree_leaves_with_path(results["split"])
                  if SPLIT[0] in sharding.split_over_devices(leaf.shape, mesh).spec
                  and sharding.is_split_field(path)]
  assert any(".opt_state" in name for name in split_leaves)
  assert any(name.startswith(".ema") for name in split_leaves)
  # Reduce-scattered gradients sum in another order than all-reduced ones.
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(results["split"]),
                          jax.tree.leaves(results["replicated"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path))

  kept = {devices: memory_plan.per_device_state_bytes(initial, devices) for devices in (1, 8)}
  print("argument bytes per device:", arguments, "state bytes per device:", kept)
  assert arguments["replicated"] - arguments["split"] == kept[1] - kept[8]
