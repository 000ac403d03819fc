"""The BiGAN paper's MNIST networks (appendix C.1): layer structure and parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigbigan.models import mlp
from bigbigan.models.networks import build_mlp_networks
from conftest import REPO, load_config

Z, X, H = 50, 784, 1024  # latent, pixels, hidden units


def _variables(module, *inputs):
  return jax.eval_shape(lambda: module.init({"params": jax.random.PRNGKey(0),
                                             "latent": jax.random.PRNGKey(1)},
                                            *inputs, train=False))


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_paper_networks_have_the_papers_structure_and_size():
  networks = build_mlp_networks(load_config(f"{REPO}/configs/mnist_bigan.py"), data_dim=X)
  x, z = jnp.zeros((2, X)), jnp.zeros((2, Z))
  g = _variables(networks.generator, z)
  e = _variables(networks.encoder, x)
  d = _variables(networks.discriminator, x, z)

  # Two hidden layers of 1024; the second is normalised by parameter-free BatchNorm, so it
  # has no bias (BN removes it), no BN scale/offset, and BN running statistics only there.
  for variables in (g, e, d):
    hidden = variables["params"]["hidden"]
    assert hidden["dense_0"]["kernel"].shape[1] == hidden["dense_1"]["kernel"].shape[1] == H
    assert "bias" in hidden["dense_0"] and "bias" not in hidden["dense_1"]
    assert set(variables["batch_stats"]["hidden"]) == {"bn_1"}
    assert not any("bn" in name for name in hidden)
  # D sees z through a learned linear map at each of its layers, the output included.
  d_params = d["params"]
  assert d_params["hidden"]["side_0"]["kernel"].shape == (Z, H)
  assert d_params["hidden"]["side_1"]["kernel"].shape == (Z, H)
  assert d_params["side_out"]["kernel"].shape == (Z, 1)

  # Dense layers: kernel + bias, except the bias-free layers before BN and the side maps.
  assert _count(g["params"]) == (Z * H + H) + H * H + (H * X + X) == 1_904_400
  assert _count(e["params"]) == (X * H + H) + H * H + (H * Z + Z) == 1_903_666
  assert _count(d_params) == (X * H + H + Z * H) + (H * H + Z * H) + (H + 1 + Z) == 1_955_891


def test_output_ranges_and_activations():
  config = load_config(f"{REPO}/configs/mnist_bigan.py")
  networks = build_mlp_networks(config, data_dim=X)
  z = jax.random.uniform(jax.random.PRNGKey(0), (16, Z), minval=-1, maxval=1)
  variables = networks.generator.init(jax.random.PRNGKey(1), z, train=False)
  images = networks.generator.apply(variables, z * 100, train=False)
  # G's sigmoid output keeps pixels in (0, 1) whatever z is.
  assert images.shape == (16, X)
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
  # ReLU in G, leaky ReLU with slope 0.2 in E and D, as the networks are built.
  assert networks.generator.activation == "relu"
  assert networks.encoder.activation == networks.discriminator.activation == "leaky_relu"
  t = jnp.array([-2.0, -0.5, 0.0, 3.0])
  np.testing.assert_allclose(mlp.ACTIVATIONS["leaky_relu"](t), [-0.4, -0.1, 0.0, 3.0])
  np.testing.assert_allclose(mlp.ACTIVATIONS["relu"](t), [0.0, 0.0, 0.0, 3.0])


def test_bounded_encoder_exposes_its_linear_output():
  # The paper's 1-NN features are E's linear output; E(x) is its tanh.
  x = jax.random.uniform(jax.random.PRNGKey(0), (8, X))
  for variant, bounded in (("paper", True), ("lr", False)):
    encoder = build_mlp_networks(load_config(f"{REPO}/configs/mnist_bigan.py:{variant}"),
                                 data_dim=X).encoder
    variables = encoder.init({"params": jax.random.PRNGKey(1)}, x, train=False)
    (_, z_mean), sown = encoder.apply(variables, x * 50, train=False,
                                      mutable=["intermediates"])
    if bounded:
      logits = sown["intermediates"]["logits"][0]
      assert float(jnp.max(jnp.abs(logits))) > 1.0  # Outside tanh's range: not E(x) itself.
      np.testing.assert_allclose(jnp.tanh(logits), z_mean, rtol=1e-6, atol=1e-6)
    else:  # A linear output is its own logits.
      assert "logits" not in sown["intermediates"]


def test_summary_reports_the_paper_networks():
  from bigbigan import summary  # pylint: disable=g-import-not-at-top
  found = summary.summarise(load_config(f"{REPO}/configs/mnist_bigan.py"))
  assert {name: v["parameters"] for name, v in found.items()} == {
      "generator": 1_904_400, "encoder": 1_903_666, "discriminator": 1_955_891}
  assert found["discriminator"]["inputs"] == {"x": "(1, 784)", "z": "(1, 50)"}
  # A Dense layer's forward is 2 x its multiply-adds: E's three layers, about 3.8 MFLOPs.
  assert found["encoder"]["gflops_per_example"] == pytest.approx(
      2 * (784 * 1024 + 1024 * 1024 + 1024 * 50) / 1e9, rel=0.02)
