"""Standing statistics: the EMA networks' own BatchNorm statistics equal float64 moments of
their pre-BatchNorm activations over the same batches, per device when BN is; evaluation-
mode networks run with them."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigbigan import sharding
from bigbigan.families import bigbigan as bigbigan_family
from bigbigan.families import bigbigan_predict, standing_stats
from bigbigan.families.common import normalise_images, sample_prior
from conftest import apply_overrides
from mnist_mock import tiny_bigbigan_config

# 4 rows per device in the per-device case: with 2, E's last BatchNorms normalise so few
# values that float32 rounding differences between the sharded forward and the reference's
# grow past 1e-4.
BATCHES, BATCH = 3, 32


def _setup(scope: str):
  config = apply_overrides(tiny_bigbigan_config(), {
      "batch_size": BATCH, "standing_stats_batches": BATCHES, "batch_norm_scope": scope})
  networks = bigbigan_family.build_networks(config)
  state = bigbigan_family.state_initializer(config, networks)(jax.random.PRNGKey(0))
  # EMA params away from the live ones: statistics of the live networks would not match.
  noise = np.random.default_rng(1)
  state = state.replace(ema=jax.tree.map(
      lambda p: p + 0.2 * noise.standard_normal(p.shape).astype(p.dtype) * np.std(p),
      state.ema))
  side = config.encoder.resolution
  images = [np.random.default_rng(10 + i).integers(0, 256, (BATCH, side, side, 3), np.uint8)
            for i in range(BATCHES)]
  return config, networks, state, images


def _pre_bn_inputs_fn(module):
  """A jitted (variables, x, rngs) -> {BatchNorm path: the input it normalised} of one
  training-mode forward."""

  def run(variables, x, rngs):
    inputs = {}

    def capture(next_fun, args, kwargs, context):
      if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
        inputs["/".join(context.module.path)] = args[0]
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(capture):
      module.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats", "spectral"])
    return inputs

  return jax.jit(run)


def _float64_moments(h) -> tuple[np.ndarray, np.ndarray]:
  h = np.asarray(h, np.float64)
  h = h.reshape(-1, h.shape[-1])
  return h.mean(0), h.var(0)


def _reference(config, networks, state, images, shards: int) -> dict:
  """{network: {path: (mean, var)}}: float64 moments of the EMA params' pre-BatchNorm
  activations, averaged over the batches and over the devices' shards (each shard's forward
  normalised by its own statistics)."""
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), standing_stats.STANDING_SEED)
  runs = {"generator": [], "encoder": []}
  forwards = {name: _pre_bn_inputs_fn(getattr(networks, name)) for name in runs}
  for i, batch in enumerate(images):
    # The standing forwards' latents: batch i's key, as families/standing_stats.py draws them.
    z_key, _ = jax.random.split(jax.random.fold_in(key, i))
    inputs = {"generator": np.asarray(sample_prior(z_key, (BATCH, config.latent_dim),
                                                   config.latent_prior)),
              "encoder": np.asarray(normalise_images(batch))}
    for name, network_inputs in inputs.items():
      network = getattr(state, name)
      variables = {"params": state.ema[name], "batch_stats": network.batch_stats}
      if network.spectral:
        variables["spectral"] = network.spectral
      for rows in np.split(network_inputs, shards):
        captured = forwards[name](variables, rows, {"latent": jax.random.PRNGKey(i)})
        runs[name].append({path: _float64_moments(h) for path, h in captured.items()})
  return {name: {path: tuple(np.mean([m[path][k] for m in found], axis=0) for k in (0, 1))
                 for path in found[0]} for name, found in runs.items()}


def _leaf(tree: dict, path: str) -> dict:
  for key in path.split("/"):
    tree = tree[key]
  return tree


@pytest.mark.slow
@pytest.mark.parametrize("scope,shards", [("global", 1), ("per_device", 8)])
def test_standing_statistics_equal_float64_moments_of_the_ema_networks(scope, shards):
  config, networks, state, images = _setup(scope)
  mesh = sharding.make_mesh()
  refresh = standing_stats.make_standing_stats_fn(config, networks, mesh)
  batches = [sharding.to_global_batch(x, mesh) for x in images]
  found = jax.device_get(refresh(jax.device_put(state, sharding.replicated(mesh)), batches))
  reference = _reference(config, networks, state, images, shards)
  for name in ("generator", "encoder"):
    assert len(reference[name]) == len(jax.tree.leaves(state.standing_stats[name])) // 2
    for path, (mean, var) in reference[name].items():
      stats = _leaf(found.standing_stats[name], path)
      # float32 sums against float64 sums of the same activations, which themselves differ
      # by float32 rounding between the sharded update and this forward, more so deep in
      # E: 1e-4 of each layer's largest value (3e-5 seen).
      for moment, value in (("mean", mean), ("var", var)):
        np.testing.assert_allclose(stats[moment], value, rtol=1e-4,
                                   atol=1e-4 * np.abs(value).max(),
                                   err_msg=f"{name} {path} {moment}")
  # The training state's own running averages are left as they were.
  for name in ("generator", "encoder"):
    jax.tree.map(np.testing.assert_array_equal, getattr(found, name).batch_stats,
                 getattr(state, name).batch_stats)


@pytest.mark.slow
def test_evaluation_mode_networks_run_with_the_standing_statistics():
  config, networks, state, images = _setup("global")
  mesh = sharding.make_mesh()
  refresh = standing_stats.make_standing_stats_fn(config, networks, mesh)
  state = refresh(jax.device_put(state, sharding.replicated(mesh)),
                  [sharding.to_global_batch(x, mesh) for x in images])
  fns = bigbigan_predict.make_predict_fns(config, networks, mesh)
  x = normalise_images(images[0])
  z = jnp.asarray(np.random.default_rng(0).standard_normal((BATCH, config.latent_dim)),
                  jnp.float32)
  for name, fn, inputs in (("generator", fns.generate, (z,)),
                           ("encoder", lambda s, x: fns.encode(s, x)["avepool_feat"], (x,))):
    variables = {"params": state.ema[name], "batch_stats": state.standing_stats[name]}
    if getattr(state, name).spectral:
      variables["spectral"] = getattr(state, name).spectral
    module = getattr(networks, name)
    expected = module.apply(variables, *inputs, train=False,
                            rngs={"latent": jax.random.PRNGKey(0)})
    if name == "encoder":
      expected = expected["avepool_feat"]
    np.testing.assert_allclose(np.asarray(fn(state, *inputs)), np.asarray(expected),
                               rtol=1e-5, atol=3e-5, err_msg=name)
