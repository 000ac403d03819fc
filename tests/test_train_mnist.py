"""BiGAN on (mock) MNIST end to end: the pipeline, the trainer and the representation metrics."""

import functools
import json
import os
import sys

import jax
import numpy as np
import pytest

from bigbigan import checkpointing, sharding, train
from bigbigan import optimizers as optimizers_lib
from bigbigan.data import mnist
from bigbigan.errors import ConfigError, DatasetError
from bigbigan.evaluation.linear_probe import linear_probe_accuracy
from bigbigan.families import bigan_predict, bigan_update
from bigbigan.families.bigan import init_train_state
from bigbigan.models.networks import build_mlp_networks
from conftest import FAST_COMPILE, REPO, free_port, run_processes
from mnist_mock import SPLIT_OFFSETS, SPLIT_SIZES, mock_image, mock_label, tiny_mnist_config

def _pixel_1nn_reference() -> float:
  """1-NN accuracy of test on train in raw pixels, float64 NumPy."""
  def split(name):
    ids = range(SPLIT_OFFSETS[name], SPLIT_OFFSETS[name] + SPLIT_SIZES[name])
    images = np.stack([mock_image(i).reshape(-1) / 255.0 for i in ids])
    return images, np.array([mock_label(i) for i in ids])
  (train_x, train_y), (test_x, test_y) = split("train"), split("test")
  distances = np.sum((test_x[:, None] - train_x[None]) ** 2, axis=-1)
  return float(np.mean(train_y[np.argmin(distances, axis=1)] == test_y))


def _split(name: str, permutation_seed=None) -> tuple[np.ndarray, np.ndarray]:
  """A split's flattened (permuted) uint8 images and labels, straight from the mock."""
  ids = range(SPLIT_OFFSETS[name], SPLIT_OFFSETS[name] + SPLIT_SIZES[name])
  images = np.stack([mock_image(i).reshape(-1) for i in ids])
  if permutation_seed is not None:  # Pixel i becomes the original's pixel permutation[i].
    images = images[:, mnist.pixel_permutation(permutation_seed)]
  return images, np.array([mock_label(i) for i in ids])


def _nearest_label(train_x, train_y, test_x, metric) -> np.ndarray:
  train_x, test_x = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
  if metric == "cosine":
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
    return train_y[np.argmax(unit(test_x) @ unit(train_x).T, axis=1)]
  return train_y[np.argmin(np.sum((test_x[:, None] - train_x[None]) ** 2, axis=-1), axis=1)]


def _expected_representation_metrics(config, state, probe: bool) -> dict:
  """The evaluator's metrics recomputed from the trained state: {name: value}, with None
  for a metric that must be logged but is not recomputed.

  Features come from the predict functions on the mock's images; 1-NN is float64 NumPy.
  Names as MnistRepresentation's (evaluation/mnist_representation.py): the headline
  features (the first of z_logits, z_mean, discriminator) unsuffixed, the others with their
  name, `_cosine` for cosine 1-NN. Of the probe's accuracies only the headline's is
  recomputed: an L-BFGS fit costs seconds here, the others take the same path, and the
  probe's own answers are tested on datasets built for them (test_linear_probe.py).
  """
  mesh = sharding.make_mesh()
  networks = build_mlp_networks(config, mnist.MNIST_PIXELS)
  d_features = not bigan_update.joint_discriminator(config, networks) and not config.conditional
  features_fn = bigan_predict.make_predict_fns(config, networks, mesh, mnist.normalise_pixels,
                                               d_features).features

  def features(images):
    padded = np.zeros((-len(images) % 8 + len(images), images.shape[1]), np.float32)
    padded[:len(images)] = mnist.normalise_pixels(images)
    found = features_fn(state, sharding.from_host_array(padded, mesh))
    return {name: np.asarray(value)[:len(images)] for name, value in found.items()}

  (train_x, train_y), (test_x, test_y) = (_split(name, config.pixel_permutation_seed)
                                          for name in ("train", "test"))
  train_f, test_f = features(train_x), features(test_x)
  headline = next(name for name in ("z_logits", "z_mean", "discriminator") if name in train_f)
  expected = {"linear_accuracy_pixels": None} if probe else {}
  for name in train_f:
    suffix = "" if name == headline else f"_{name}"
    for metric in ("l2", "cosine"):
      predicted = _nearest_label(train_f[name], train_y, test_f[name], metric)
      expected[f"knn_1_accuracy{'_cosine' if metric == 'cosine' else ''}{suffix}"] = float(
          np.mean(predicted == test_y))
    if probe:
      expected[f"linear_accuracy{suffix}"] = None if suffix else linear_probe_accuracy(
          train_f[name], train_y, test_f[name], test_y, mesh)
  return expected


def _assert_representation_metrics(metrics: dict, expected: dict) -> None:
  """The logged accuracies are the expected ones (those recomputed equal), no others."""
  logged = {name for name in metrics if name.startswith(("knn_", "linear_"))}
  assert logged - {"knn_1_accuracy_pixels"} == set(expected)
  for name, value in expected.items():
    if value is not None:
      assert metrics[name] == value, name


def _final_metrics(workdir) -> dict:
  with open(workdir / "metrics.jsonl") as f:
    return [json.loads(line) for line in f][-1]


@pytest.mark.parametrize("permutation_seed", [None, 3])
@pytest.mark.slow(seconds=71)
def test_trains_and_reports_representation_metrics(mock_mnist, tmp_path, permutation_seed):
  # The probe's L-BFGS takes seconds per feature on 8 simulated devices: run it once.
  probe = permutation_seed is None
  config = tiny_mnist_config(pixel_permutation_seed=permutation_seed, eval_linear_probe=probe)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 2
  metrics = _final_metrics(tmp_path)
  # Raw pixels: the trainer's sharded 1-NN over the padded, masked evaluation iterator equals
  # a float64 reference; a fixed pixel permutation cannot change an L2 distance.
  assert metrics["knn_1_accuracy_pixels"] == pytest.approx(_pixel_1nn_reference(), abs=1e-9)
  # The headline is E's linear output (the paper's measure); E(x) after its tanh is z_mean.
  # Every accuracy is what the trained state's features give, recomputed here.
  expected = _expected_representation_metrics(config, state, probe)
  names = {"knn_1_accuracy", "knn_1_accuracy_cosine", "knn_1_accuracy_penultimate",
           "knn_1_accuracy_z_mean"}
  assert names <= set(expected) and not any(name.endswith("_z_logits") for name in metrics)
  _assert_representation_metrics(metrics, expected)
  assert np.isfinite(metrics["d_loss"]) and np.isfinite(metrics["eg_loss"])
  assert (tmp_path / "mnist_0000002.png").exists()
  jax.tree.map(lambda leaf: np.testing.assert_array_equal(np.isfinite(leaf), True),
               jax.device_get(state.generator.params))


def test_missing_dataset_gives_the_clear_error(tmp_path):
  empty = tmp_path / "empty_tfds"
  empty.mkdir()
  with pytest.raises(DatasetError) as error:
    train.train_and_evaluate(tiny_mnist_config(data_dir=str(empty)), str(tmp_path / "run"))
  message = str(error.value)
  assert "'mnist' is not prepared in" in message and str(empty) in message
  assert "tfds build mnist" in message and "\n" not in message
  assert not (tmp_path / "run" / "checkpoints").exists() or not any(
      (tmp_path / "run" / "checkpoints").iterdir())


@pytest.mark.slow
def test_two_processes_train_and_evaluate(mnist_dir, tmp_path):
  """Pipeline, training and evaluation (collectives, masks, gathers) across 2 processes.

  Each process reads its own half of the training split, so the training batches differ
  from a 1-process run's; the evaluation covers each example once all the same, so the
  raw-pixel 1-NN must equal the float64 reference exactly.
  """
  port = free_port()
  script = str(REPO / "tests" / "mnist_mock.py")
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count=4 {FAST_COMPILE}",
         "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
  run_processes([(f"process_{i}", [sys.executable, script, "bigan", str(mnist_dir),
                                   str(tmp_path / "run"), str(i), "2", str(port)], env)
                 for i in range(2)], tmp_path)

  metrics = _final_metrics(tmp_path / "run")
  assert metrics["step"] == 2
  assert metrics["knn_1_accuracy_pixels"] == pytest.approx(_pixel_1nn_reference(), abs=1e-9)
  # The encoder's 1-NN accuracies are those of the saved state's features, recomputed in
  # this one process.
  config = tiny_mnist_config(eval_linear_probe=False)
  networks = build_mlp_networks(config, mnist.MNIST_PIXELS)
  init = functools.partial(init_train_state, networks, optimizers_lib.make_optimizers(config),
                           data_dim=mnist.MNIST_PIXELS, latent_dim=config.latent_dim,
                           joint=bigan_update.joint_discriminator(config, networks),
                           ema=config.ema_decay > 0)
  # Restored on one device: orbax takes seconds longer for an 8-device replicated copy.
  replicated = sharding.replicated(sharding.make_mesh(jax.devices()[:1]))
  abstract = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                            sharding=replicated),
                          jax.eval_shape(init, jax.random.PRNGKey(0)))
  checkpointer = checkpointing.Checkpointer.for_config(str(tmp_path / "run"), config)
  state = checkpointer.restore(2, abstract)
  checkpointer.close()
  # The predict functions take the state where it lies (its own layout): here, on the
  # 8 devices that they run on.
  state = jax.device_put(state, sharding.replicated(sharding.make_mesh()))
  _assert_representation_metrics(metrics, _expected_representation_metrics(config, state,
                                                                            probe=False))
  assert np.isfinite(metrics["d_loss"]) and np.isfinite(metrics["eg_loss"])
  assert (tmp_path / "run" / "mnist_0000002.png").exists()


@pytest.mark.parametrize("kind", ["l2", "l1"])
@pytest.mark.slow
def test_autoencoder_baseline_trains_e_and_g_only(mock_mnist, tmp_path, kind):
  config = tiny_mnist_config(objective="autoencoder", reconstruction_loss=kind, total_steps=6,
                             eval_every_steps=6, checkpoint_every_steps=6,
                             eval_linear_probe=False,
                             **{"optimizer.generator_learning_rate": 1e-2})
  initial = jax.device_get(train.train_and_evaluate(
      tiny_mnist_config(objective="autoencoder", total_steps=1, eval_every_steps=1,
                        checkpoint_every_steps=1, eval_linear_probe=False),
      str(tmp_path / "one_step")))
  state = jax.device_get(train.train_and_evaluate(config, str(tmp_path / "run")))
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    losses = [json.loads(line)["reconstruction_loss"] for line in f]
  assert len(losses) == 6 and losses[-1] < losses[0]  # It learns to reconstruct...
  # ...while D, carried in the state with the same initialisation, is never updated.
  jax.tree.map(np.testing.assert_array_equal, state.discriminator.params,
               initial.discriminator.params)
  assert "knn_1_accuracy" in _final_metrics(tmp_path / "run")


def test_autoencoder_needs_an_encoder(tmp_path):
  config = tiny_mnist_config(objective="autoencoder", **{"encoder.kind": "none"})
  with pytest.raises(ConfigError, match="needs an encoder"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # Refused before anything was written.


@pytest.mark.parametrize("variant, other_features", [
    ("gan", ()),  # The "D" baseline: D's last hidden layer is the headline representation.
    ("lr", ("penultimate", "discriminator")),
    ("jlr", ("penultimate", "discriminator")),
    ("conditional", ("penultimate", "z_mean")),  # A tanh E: its logits are the headline.
])
@pytest.mark.slow
def test_table1_baselines_train_and_evaluate(mock_mnist, tmp_path, variant, other_features):
  config = tiny_mnist_config(variant, eval_linear_probe=False)
  state = jax.device_get(train.train_and_evaluate(config, str(tmp_path)))
  metrics = _final_metrics(tmp_path)
  expected = _expected_representation_metrics(config, state, probe=False)
  assert {"knn_1_accuracy", "knn_1_accuracy_cosine"} | {
      f"knn_1_accuracy_{feature}" for feature in other_features} <= set(expected)
  _assert_representation_metrics(metrics, expected)
  # The headline's own name never appears with a suffix.
  headline = {"gan": "_discriminator", "conditional": "_z_logits"}.get(variant, "_z_mean")
  assert not any(name.endswith(headline) for name in metrics)
  if variant == "gan":
    assert state.encoder is None and "knn_1_accuracy_penultimate" not in metrics
  if variant in ("lr", "jlr"):
    assert np.isfinite(metrics["latent_regression_loss"])
  assert (tmp_path / "mnist_0000002.png").exists()


@pytest.mark.slow
def test_conditional_generator_and_discriminator_see_the_label(mock_mnist, tmp_path):
  config = tiny_mnist_config("conditional", eval_linear_probe=False)
  state = train.train_and_evaluate(config, str(tmp_path))
  latent, classes, width = config.latent_dim, 10, config.generator.hidden_sizes[0]
  # G's input and D's side input are [z, one-hot label]; E sees x alone.
  assert state.generator.params["hidden"]["dense_0"]["kernel"].shape == (latent + classes,
                                                                          width)
  assert state.discriminator.params["hidden"]["side_0"]["kernel"].shape[0] == latent + classes
  assert state.encoder.params["hidden"]["dense_0"]["kernel"].shape[0] == 784
  # The same z with two labels gives two different images.
  mesh = sharding.make_mesh()
  generate = bigan_predict.make_predict_fns(config, build_mlp_networks(config, 784), mesh,
                                            mnist.normalise_pixels).generate
  z = np.zeros((8, latent), np.float32)
  onehot = np.eye(classes, dtype=np.float32)[np.arange(8) % 2]
  images = np.asarray(generate(state, sharding.from_host_array(
      np.concatenate([z, onehot], axis=1), mesh)))
  assert not np.allclose(images[0], images[1]) and np.allclose(images[0], images[2])
