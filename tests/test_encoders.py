"""BigBiGAN's encoders: ResNet-50 v2 and RevNet-50 sizes, reversible backprop against plain
backprop, its memory, the stochastic head and the released modules' feature shapes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigbigan.models.encoder import ImageEncoder
from bigbigan.models.resnet import ResNet50, ResNetV2
from bigbigan.models.revnet import RevNet, RevNet50, RevNetStage

KEY = jax.random.PRNGKey(0)
IMAGE_256 = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
# The real trunks, 16x narrower and shallower: seconds at 256 pixels on a CPU.
_TinyResNet = functools.partial(ResNetV2, depth=26, base_width=4)
_TinyRevNet = functools.partial(RevNet, depth=26, base_width=4)


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _shapes(module, x=IMAGE_256):
  """(variables, output) shapes of `module` on `x`, with no weights allocated."""
  rngs = {"params": KEY, "latent": KEY}
  variables = jax.eval_shape(lambda x: module.init(rngs, x, train=False), x)
  out = jax.eval_shape(lambda v, x: module.apply(v, x, train=False, rngs={"latent": KEY}),
                       variables, x)
  return variables, out


@pytest.mark.parametrize("trunk, expected, features", [
    (ResNet50(), 23.5e6, 2048),
    (RevNet50(width=4), 85.7e6, 8192),
])
def test_published_trunk_sizes(trunk, expected, features):
  variables, out = _shapes(trunk)
  assert _count(variables["params"]) == pytest.approx(expected, rel=0.01)
  assert out.shape == (1, features)


@pytest.mark.slow
def test_released_feature_names_and_shapes():
  for backbone, width, features in (("resnet", 1, 2048), ("revnet", 4, 8192)):
    _, out = _shapes(ImageEncoder(backbone=backbone, width=width))
    assert {k: v.shape for k, v in out.items()} == {
        "z_mean": (1, 120), "z_stdev": (1, 120), "z_sample": (1, 120),
        "avepool_feat": (1, features),
        "bn_crelu_feat": (1, 2 * features)}


def _tiny_stage(reversible):
  return RevNetStage(channels=16, units=6, reversible=reversible)


@pytest.mark.slow
def test_reversible_gradients_equal_plain_backprop():
  x = jax.random.normal(KEY, (4, 8, 8, 16))
  variables = _tiny_stage(True).init(KEY, x, train=False)
  weights = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 16))

  def loss(params, x, reversible):
    y, state = _tiny_stage(reversible).apply({**variables, "params": params}, x, train=True,
                                              mutable=["batch_stats"])
    return jnp.sum(y * weights), state

  results = {}
  for reversible in (True, False):
    grad_fn = jax.jit(jax.grad(lambda p, x: loss(p, x, reversible), argnums=(0, 1),
                               has_aux=True))
    results[reversible] = grad_fn(variables["params"], x)
  (rev_grads, rev_stats), (plain_grads, plain_stats) = results[True], results[False]

  def relative_error(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))

  flat = lambda tree: jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(tree)])
  # The whole gradient (params and input) to 1e-5 (measured: 3e-7). Per leaf, the
  # gradient of a BatchNorm scale is a sum of nearly cancelling terms, so the input
  # recomputed in float32 moves it more (measured: up to 1.6e-5).
  assert relative_error(flat(rev_grads), flat(plain_grads)) < 1e-5
  assert max(jax.tree.leaves(jax.tree.map(relative_error, rev_grads, plain_grads))) < 1e-4
  # BatchNorm's running statistics are updated once, by the forward pass, identically.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               rev_stats, plain_stats)
  moved = jax.tree.map(lambda new, old: float(jnp.max(jnp.abs(new - old))),
                       rev_stats["batch_stats"], variables["batch_stats"])
  assert min(jax.tree.leaves(moved)) > 0.0


@pytest.mark.slow
def test_reversible_backprop_needs_less_temporary_memory():
  x = jnp.zeros((8, 16, 16, 32))
  variables = RevNetStage(32, 8).init(KEY, x, train=False)
  temp = {}
  for reversible in (True, False):
    stage = RevNetStage(32, 8, reversible=reversible)
    grad = jax.grad(lambda p: jnp.sum(stage.apply({**variables, "params": p}, x, train=True,
                                                  mutable=["batch_stats"])[0] ** 2))
    temp[reversible] = jax.jit(grad).lower(variables["params"]).compile(
    ).memory_analysis().temp_size_in_bytes
  print(f"temporary bytes, 8 units at 8x16x16x32: reversible {temp[True]:,}, "
        f"plain {temp[False]:,}")
  assert temp[True] < 0.6 * temp[False]


@pytest.mark.slow
def test_stochastic_head_samples_around_its_mean():
  encoder = ImageEncoder(backbone="resnet", depth=26, base_width=8, head_width=32,
                         latent_dim=6, stochastic=True)
  x = jax.random.normal(KEY, (2, 32, 32, 3))
  variables = encoder.init({"params": KEY, "latent": KEY}, x, train=False)

  draws = 4000  # Each image repeated: one eps per copy (BatchNorm on running statistics).
  out = jax.jit(lambda x: encoder.apply(variables, x, train=False, rngs={"latent": KEY}))(
      jnp.tile(x, (draws, 1, 1, 1)))
  samples = out["z_sample"].reshape(draws, 2, 6)
  mean, scale = out["z_mean"][:2], out["z_stdev"][:2]
  # Within 4 standard errors of the mean; the std within 6%.
  np.testing.assert_allclose(samples.mean(0), mean, atol=4 * float(scale.max()) / draws**0.5)
  np.testing.assert_allclose(samples.std(0), scale, rtol=0.06)


@pytest.mark.slow
def test_deterministic_head_ignores_the_noise_and_bounds_apply():
  encoder = ImageEncoder(backbone="revnet", depth=26, base_width=8, head_width=32,
                         latent_dim=6, stochastic=False, latent_bound="tanh")
  x = jax.random.normal(KEY, (2, 32, 32, 3))
  variables = encoder.init({"params": KEY}, x, train=False)
  a = encoder.apply(variables, x, train=False, rngs={"latent": jax.random.PRNGKey(1)})
  b = encoder.apply(variables, x, train=False, rngs={"latent": jax.random.PRNGKey(2)})
  np.testing.assert_array_equal(a["z_sample"], b["z_sample"])
  np.testing.assert_array_equal(a["z_sample"], a["z_mean"])
  np.testing.assert_array_equal(a["z_stdev"], np.zeros((2, 6), np.float32))
  assert float(jnp.max(jnp.abs(a["z_mean"]))) <= 1.0  # tanh (1.0 itself in float32)


@pytest.mark.parametrize("backbone", ["resnet", "revnet"])
@pytest.mark.slow
def test_tiny_presets_run_at_256_pixels(backbone):
  encoder = ImageEncoder(backbone=backbone, depth=26, base_width=4, head_width=16,
                         latent_dim=8)
  x = jax.random.uniform(KEY, (2, 256, 256, 3), minval=-1, maxval=1)
  variables = encoder.init({"params": KEY, "latent": KEY}, x, train=False)
  out, state = encoder.apply(variables, x, train=True, rngs={"latent": KEY},
                             mutable=["batch_stats"])
  assert out["avepool_feat"].shape == (2, 128) and out["bn_crelu_feat"].shape == (2, 256)
  assert np.all(np.isfinite(out["z_sample"]))
  assert jax.tree.structure(state["batch_stats"]) == jax.tree.structure(
      variables["batch_stats"])


@pytest.mark.parametrize("tiny", [_TinyResNet, _TinyRevNet])
def test_tiny_presets_keep_the_structure(tiny):
  # The test presets are the real trunks with fewer channels and units.
  variables, out = _shapes(tiny())
  assert out.shape == (1, 128)  # 32 x base_width 4.
  assert any("stage_3" in name for name in variables["params"])
