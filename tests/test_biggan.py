"""BigGAN's G and BigBiGAN's D: published sizes, the layers' defining properties, the hinge
losses, orthogonal regularisation, EMA and bf16 compute."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigbigan import losses, sharding, summary
from bigbigan.errors import ConfigError
from bigbigan.models import biggan, layers
from bigbigan.models.discriminator import BigBiGANDiscriminator
from bigbigan.models.networks import build_biggan_networks
from bigbigan.state import NetworkState, TrainState, update_ema
from conftest import REPO, load_config

KEY = jax.random.PRNGKey(0)


def _init(module, *inputs, **kwargs):
  return module.init({"params": KEY}, *inputs, train=False, **kwargs)


@pytest.mark.slow
def test_published_parameter_counts_through_the_summary():
  # BigGAN at 128 pixels, ch 96, z 120, a 128-d shared embedding and 1,000 classes.
  found = summary.summarise(load_config(f"{REPO}/configs/biggan.py:conditional"))
  assert found["generator"]["parameters"] == pytest.approx(70.4e6, rel=5e-3)
  assert found["discriminator"]["parameters"] == pytest.approx(88.0e6, rel=5e-3)
  assert found["discriminator"]["inputs"] == {"x": "(1, 128, 128, 3)", "labels": "(1,)"}
  # Forward FLOPs per image, XLA's count against the analytic 42.2 G and 21.7 G (2 x MACs).
  assert found["generator"]["gflops_per_example"] == pytest.approx(42.2, rel=0.05)
  assert found["discriminator"]["gflops_per_example"] == pytest.approx(21.7, rel=0.07)
  # BigBiGAN's D adds H(z) and J(F, H): two 8 x 2048 MLPs with skip connections.
  bigbigan_d = summary.summarise(load_config(f"{REPO}/configs/biggan.py"))["discriminator"]
  trunk_and_head = 87_982_370 - 1000 * 1536  # BigGAN's D without the class projection.
  h = 120 * 2048 + 7 * 2048 * 2048 + 8 * 2048
  j = (1536 + 2048) * 2048 + 7 * 2048 * 2048 + 8 * 2048
  assert bigbigan_d["parameters"] == trunk_and_head + h + (2048 + 1) + j + (2048 + 1)


@pytest.mark.slow
def test_summary_command_prints_json():
  out = subprocess.run([sys.executable, "-m", "bigbigan.summary",
                        f"--config={REPO}/configs/biggan.py:conditional"], cwd=REPO,
                       capture_output=True, text=True, check=True).stdout
  printed = json.loads(out)
  assert printed["generator"]["parameters"] == 70_433_988
  assert printed["discriminator"]["parameters"] == 87_982_370


def _with_singular_values(shape, singular_values, seed):
  """A weight whose [fan_in, out] matrix is U diag(s) V^T with random orthonormal U, V;
  returns (weight, V's columns as rows: the right singular vectors, in the order of s)."""
  rng = np.random.default_rng(seed)
  rows, columns = int(np.prod(shape[:-1])), shape[-1]
  left = np.linalg.qr(rng.standard_normal((rows, columns)))[0]
  right = np.linalg.qr(rng.standard_normal((columns, columns)))[0]
  matrix = left @ np.diag(singular_values) @ right.T
  return jnp.asarray(matrix.reshape(shape), jnp.float32), right.T


@pytest.mark.parametrize("shape", [(24, 16), (3, 3, 4, 6)])  # A Dense and a conv kernel.
def test_spectral_norm_power_iteration_finds_the_top_singular_pair(shape):
  # Distinct singular values with ratio 0.6: each power iteration (u <- W^T W u, normalised)
  # shrinks u's component off the top right singular vector by 0.6^2 relative to it.
  s = 5.0 * 0.6 ** np.arange(shape[-1])
  weight, right = _with_singular_values(shape, s, seed=len(shape))
  matrix = np.asarray(weight, np.float64).reshape(-1, shape[-1])
  module = layers.SpectralNormalised()
  variables = module.init({"params": jax.random.PRNGKey(1)}, weight, update=False)
  u = np.asarray(variables["spectral"]["u"], np.float64)
  apply = jax.jit(lambda v: module.apply(v, weight, update=True, mutable=["spectral"]))
  for _ in range(30):
    normalised, spectral = apply(variables)
    variables = {**variables, **spectral}
    # The layer's state after each call is one float64 power iteration from the last.
    u = matrix.T @ (matrix @ u)
    u /= np.linalg.norm(u)
    np.testing.assert_allclose(variables["spectral"]["u"], u, atol=1e-5)
    assert float(variables["spectral"]["sigma"]) == pytest.approx(
        np.linalg.norm(matrix @ u), rel=1e-5)
  # Converged: u is +-v_1 and sigma is s_1 to float32 precision (0.36^30 ~ 5e-14), so the
  # normalised weight's top singular value is 1.
  assert abs(float(np.dot(variables["spectral"]["u"], right[0]))) == pytest.approx(1.0,
                                                                                  abs=1e-6)
  assert float(variables["spectral"]["sigma"]) == pytest.approx(s[0], rel=1e-6)
  np.testing.assert_allclose(normalised, weight / s[0], rtol=1e-5, atol=1e-7)
  # The estimate is float32 state; evaluation (update=False) divides by the stored estimate
  # and leaves the state where it was.
  assert variables["spectral"]["u"].dtype == jnp.float32
  again, unchanged = module.apply(variables, weight, update=False, mutable=["spectral"])
  np.testing.assert_allclose(again, weight / variables["spectral"]["sigma"], rtol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, unchanged["spectral"], variables["spectral"])


def test_conditional_batch_norm_gain_is_one_at_zero_conditioning():
  x = jax.random.normal(KEY, (16, 4, 4, 3)) * 5.0 + 2.0
  cbn = layers.ConditionalBatchNorm()
  cond = jnp.zeros((16, 7))
  variables = cbn.init({"params": KEY}, x, cond, train=True)
  out, _ = cbn.apply(variables, x, cond, train=True, mutable=["batch_stats", "spectral"])
  xs = np.asarray(x, np.float64)
  mean, var = xs.mean(axis=(0, 1, 2)), xs.var(axis=(0, 1, 2))
  np.testing.assert_allclose(out, (xs - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)
  # Non-zero conditioning moves gain and bias per example.
  moved, _ = cbn.apply(variables, x, jnp.ones((16, 7)), train=True,
                       mutable=["batch_stats", "spectral"])
  assert not np.allclose(moved, out, atol=1e-3)


@pytest.mark.slow
def test_batch_norm_statistics_are_over_the_global_batch():
  # Under jit over 8 devices the statistics are the whole batch's: the sharded output equals
  # the single-device one.
  x = jax.random.normal(KEY, (16, 4, 4, 8)) * 3.0 + 1.0
  cond = jax.random.normal(jax.random.PRNGKey(1), (16, 5))
  cbn = layers.ConditionalBatchNorm()
  variables = cbn.init({"params": KEY}, x, cond, train=True)
  apply = lambda v, x, c: cbn.apply(v, x, c, train=True, mutable=["batch_stats", "spectral"])
  mesh = sharding.make_mesh()
  batch = sharding.batch_sharded(mesh)
  sharded = jax.jit(apply, in_shardings=(sharding.replicated(mesh), batch, batch))(
      variables, x, cond)
  single = jax.jit(apply)(variables, x, cond)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               sharded, single)


@pytest.mark.slow
def test_non_local_block_is_the_identity_at_init_and_keeps_the_shape():
  x = jax.random.normal(KEY, (2, 64, 64, 16))
  block = layers.NonLocalBlock()
  variables = _init(block, x)
  np.testing.assert_array_equal(block.apply(variables, x, train=False), x)
  params = jax.tree_util.tree_map(lambda p: p, variables["params"])
  params["scale"] = jnp.ones(())
  out = block.apply({**variables, "params": params}, x, train=False)
  assert out.shape == x.shape and not np.allclose(out, x)
  assert variables["params"]["phi"]["kernel"].shape == (1, 1, 16, 2)  # C/8
  assert variables["params"]["g"]["kernel"].shape == (1, 1, 16, 8)  # C/2
  assert variables["params"]["out"]["kernel"].shape == (1, 1, 8, 16)
  with pytest.raises(ValueError, match="at least 8 channels"):
    _init(block, jnp.zeros((1, 8, 8, 4)))


REAL = {"x": np.array([0.5, 2.0]), "z": np.array([-1.0, 0.0]), "xz": np.array([3.0, -0.5])}
FAKE = {"x": np.array([-2.0, 0.5]), "z": np.array([1.5, -1.0]), "xz": np.array([0.0, 0.2])}
# By hand, per score: D's hinge mean(max(0, 1 - real)) + mean(max(0, 1 + fake)) and E/G's
# mean(real) - mean(fake).
HINGE = {"x": (0.5 + 0.0) / 2 + (0.0 + 1.5) / 2, "z": (2.0 + 1.0) / 2 + (2.5 + 0.0) / 2,
         "xz": (0.0 + 1.5) / 2 + (1.0 + 1.2) / 2}
LINEAR = {"x": 1.25 - (-0.75), "z": -0.5 - 0.25, "xz": 1.25 - 0.1}
SWITCHES = {"all": ("x", "z", "xz"), "x_unary_only": ("x", "xz"),
            "z_unary_only": ("z", "xz"), "no_unaries": ("xz",)}


@pytest.mark.parametrize("ablation", SWITCHES)
def test_bigbigan_losses_equal_hand_computed_values(ablation):
  kept = SWITCHES[ablation]
  d_loss, eg_loss = losses.score_losses({k: REAL[k] for k in kept},
                                        {k: FAKE[k] for k in kept})
  assert float(d_loss) == pytest.approx(sum(HINGE[k] for k in kept), abs=1e-6)
  assert float(eg_loss) == pytest.approx(sum(LINEAR[k] for k in kept), abs=1e-6)


@pytest.mark.parametrize("ablation", SWITCHES)
@pytest.mark.slow
def test_unary_switches_choose_the_scores(ablation):
  d = BigBiGANDiscriminator(resolution=32, ch=2, latent_width=8, latent_depth=2,
                            joint_width=8, joint_depth=2,
                            unary_x="x" in SWITCHES[ablation], unary_z="z" in SWITCHES[ablation])
  x, z = jax.random.normal(KEY, (3, 32, 32, 3)), jax.random.normal(KEY, (3, 6))
  variables = _init(d, x, z)
  scores = d.apply(variables, x, z, train=False)
  assert tuple(sorted(scores)) == tuple(sorted(SWITCHES[ablation]))
  assert all(s.shape == (3,) and s.dtype == jnp.float32 for s in scores.values())
  # Heads exist only for the scores kept.
  heads = {name for name in variables["params"] if name.endswith("_head")}
  assert heads == {f"{name}_head" for name in SWITCHES[ablation]}


def test_orthogonal_regularisation_equals_numpy():
  rng = np.random.default_rng(0)
  params = {"dense": {"kernel": rng.normal(size=(5, 3)), "bias": rng.normal(size=3)},
            "conv": {"kernel": rng.normal(size=(3, 3, 2, 4))},
            "shared": {"embedding": rng.normal(size=(10, 4))}}

  def reference(w):
    gram = w.T @ w
    return np.sum((gram * (1 - np.eye(len(gram)))) ** 2)

  expected = 1e-4 * (reference(params["dense"]["kernel"]) +
                     reference(params["conv"]["kernel"].reshape(-1, 4)))
  found = losses.orthogonal_regularisation(jax.tree.map(jnp.asarray, params), beta=1e-4)
  assert float(found) == pytest.approx(expected, rel=1e-5)
  # Orthogonal columns of any norms cost nothing.
  q = np.linalg.qr(rng.normal(size=(6, 6)))[0][:, :4] * np.array([1.0, 2.0, 3.0, 4.0])
  assert float(losses.orthogonal_regularisation({"kernel": jnp.asarray(q)})) < 1e-10


@pytest.mark.parametrize("shape", [(20, 700), (700, 20), (12, 12), (3, 4)])
def test_the_off_diagonal_gram_energy_is_the_direct_formula_from_the_smaller_gram(shape):
  w = np.random.default_rng(1).normal(size=shape)
  gram = w.T @ w
  off_diagonal = gram * (1 - np.eye(len(gram)))
  with jax.enable_x64(True):
    value, gradient = jax.value_and_grad(losses.off_diagonal_gram_energy)(jnp.asarray(w))
    # The largest matrix product it forms is the smaller side's square.
    jaxpr = jax.make_jaxpr(jax.grad(losses.off_diagonal_gram_energy))(jnp.asarray(w))
  assert value.dtype == jnp.float64
  np.testing.assert_allclose(value, np.sum(off_diagonal ** 2), rtol=1e-12)
  np.testing.assert_allclose(gradient, 4 * w @ off_diagonal, rtol=1e-11, atol=1e-11)
  small = min(shape)
  products = [v.aval.shape for e in jaxpr.eqns if e.primitive.name == "dot_general"
              for v in e.outvars]
  assert products and all(np.prod(s) <= max(small * small, np.prod(shape)) for s in products)


def _params_at(step):
  """G's and E's params after `step` updates: each leaf on its own linear schedule."""
  return {"generator": {"w": np.array([1.0, -2.0, 0.5]) + step * np.array([0.3, 0.1, -0.2])},
          "encoder": {"b": np.array([[4.0], [0.0]]) - step * np.array([[1.0], [0.25]])}}


@pytest.mark.parametrize("start_step", [0, 3])
def test_ema_after_k_steps_equals_the_closed_form(start_step):
  # The train steps increment `step` and then call update_ema, so after update t the EMA
  # sees step t and the params p_t. The EMA equals the params up to step `start_step`,
  # then ema_t = d ema_{t-1} + (1 - d) p_t, which unrolls to
  #   ema_k = d^(k - S) e_S + (1 - d) sum_{t=S+1..k} d^(k - t) p_t,
  # with e_S = p_S if S > 0, and the initial EMA e_0 (here not p_0) if S = 0.
  decay, k = 0.8, 9
  initial_ema = {"generator": {"w": np.array([7.0, 7.0, -7.0])},
                 "encoder": {"b": np.array([[-3.0], [2.0]])}}

  def state_at(step, ema):
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), _params_at(step))
    network = lambda name: NetworkState(params=params[name], opt_state=(), batch_stats={})
    return TrainState(step=jnp.asarray(step, jnp.int32), rng=KEY, generator=network("generator"),
                      encoder=network("encoder"), discriminator=network("generator"), ema=ema)

  update = jax.jit(update_ema, static_argnums=(1, 2))  # As the train steps run it.
  ema = jax.tree.map(lambda e: jnp.asarray(e, jnp.float32), initial_ema)
  for step in range(1, k + 1):
    ema = update(state_at(step, ema), decay, start_step).ema
    if step <= start_step:  # Not averaged yet: exactly the (float32) params.
      jax.tree.map(lambda e, p: np.testing.assert_array_equal(e, np.float32(p)), ema,
                   _params_at(step))
  first = _params_at(start_step) if start_step else initial_ema
  expected = jax.tree.map(lambda e: decay ** (k - start_step) * e, first)
  for t in range(start_step + 1, k + 1):
    expected = jax.tree.map(lambda total, p, t=t: total + (1 - decay) * decay ** (k - t) * p,
                            expected, _params_at(t))
  jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6),
               ema, expected)
  # The average trails the params: it is not simply the last params.
  assert not np.allclose(ema["generator"]["w"], _params_at(k)["generator"]["w"], atol=1e-2)


@pytest.mark.slow
def test_bfloat16_generator_stays_close_to_float32():
  z = jax.random.normal(KEY, (4, 80))
  g32 = biggan.BigGANGenerator(resolution=64, ch=4)
  variables = _init(g32, z)
  # bf16 compute, float32 params: the same variables serve both.
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  out32 = g32.apply(variables, z, train=False)
  g16 = biggan.BigGANGenerator(resolution=64, ch=4, dtype=jnp.bfloat16)
  out16 = g16.apply(variables, z, train=False)
  relative = jnp.linalg.norm(out16 - out32) / jnp.linalg.norm(out32)
  assert float(relative) < 1e-2


@pytest.mark.parametrize("resolution, ch, z_dim", [(32, 2, 64), (64, 4, 80), (128, 8, 120),
                                                   (256, 8, 140)])
@pytest.mark.slow
def test_generator_and_discriminator_presets_run(resolution, ch, z_dim):
  z = jax.random.normal(KEY, (2, z_dim))
  g = biggan.BigGANGenerator(resolution=resolution, ch=ch)
  g_vars = _init(g, z)
  images, state = g.apply(g_vars, z, train=True, mutable=["batch_stats", "spectral"])
  assert images.shape == (2, resolution, resolution, 3)
  assert float(jnp.max(jnp.abs(images))) <= 1.0
  # Training mode updates BN statistics and the SN vectors; both are their own collections.
  assert set(state) == {"batch_stats", "spectral"}
  assert ("non_local" in g_vars["params"]) == (resolution >= 64)
  d = BigBiGANDiscriminator(resolution=resolution, ch=ch, latent_width=16, latent_depth=2,
                            joint_width=16, joint_depth=2)
  scores = d.apply(_init(d, images, z), images, z, train=False)
  assert sorted(scores) == ["x", "xz", "z"]


def test_latent_chunks():
  with pytest.raises(ValueError, match="multiple of 6"):
    _init(biggan.BigGANGenerator(resolution=128, ch=8), jnp.zeros((1, 100)))
  config = load_config(f"{REPO}/configs/biggan.py:256")
  config.latent_dim = 120
  with pytest.raises(ConfigError, match="multiple of 7"):
    build_biggan_networks(config)
