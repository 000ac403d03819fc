"""The `reconstruction_labels` evaluator against a float64 pixel 1-NN computed here, with
stand-in encoders and generators whose reconstructions are known."""

import jax
import numpy as np
import pytest

from bigbigan import sharding
from bigbigan.evaluation.context import EvaluationContext
from bigbigan.evaluation.reconstruction_labels import ReconstructionLabels
from bigbigan.families import bigbigan as bigbigan_family
from bigbigan.families.common import PredictFns, normalise_images, to_discriminator_resolution
from mnist_mock import tiny_bigbigan_config


def _unit_pixels(config, data, split):
  """([N, D] float64 pixels in [0, 1] at G's resolution, [N] labels) of `split`, read from
  the same evaluation batches, reduced in numpy."""
  images, labels = [], []
  for batch in data.eval_batches(split):
    mask = batch["mask"].astype(bool)
    x = np.asarray(batch["image"], np.float64)[mask] / 127.5 - 1.0
    while x.shape[1] > config.resolution:  # 2x2 average pooling, as D's input.
      x = x.reshape(len(x), x.shape[1] // 2, 2, x.shape[2] // 2, 2, 3).mean(axis=(2, 4))
    images.append(((x + 1.0) / 2.0).reshape(len(x), -1))
    labels.append(batch["label"][mask])
  return np.concatenate(images), np.concatenate(labels)


def _nearest_labels(train, train_labels, queries):
  unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
  return train_labels[np.argmax(unit(queries) @ unit(train).T, axis=1)]


def _predict(config, generate):
  """PredictFns whose E(x) is x itself (flattened) and whose G is `generate`."""
  side = config.encoder.resolution
  return PredictFns(
      generate=lambda state, z: generate(z.reshape(len(z), side, side, 3)),
      sample_latents=None, normalise=normalise_images,
      encode=lambda state, x: {"z_mean": x.reshape(len(x), -1)})


@pytest.fixture
def setup(mock_mnist):
  config = tiny_bigbigan_config(data_dir=mock_mnist)
  mesh = sharding.make_mesh()
  data = bigbigan_family.make_data(config, mesh)
  context = EvaluationContext(config, mesh, "", data, initial_state=None)
  train = _unit_pixels(config, data, config.knn_train_split)
  test = _unit_pixels(config, data, config.eval_split)
  return config, ReconstructionLabels(context), train, test


def test_perfect_reconstructions_agree_as_often_as_the_classifier_is_right(setup):
  config, evaluator, (train, train_labels), (test, test_labels) = setup
  identity = lambda x: to_discriminator_resolution(x, config.resolution)
  metrics = evaluator.run(_predict(config, identity), None, step=1)
  pixel_accuracy = np.mean(_nearest_labels(train, train_labels, test) == test_labels)
  assert metrics["knn_1_accuracy_cosine_pixels"] == pytest.approx(pixel_accuracy, abs=1e-9)
  assert metrics["reconstruction_label_agreement"] == pytest.approx(pixel_accuracy, abs=1e-9)
  assert metrics["reconstruction_mse"] == pytest.approx(0.0, abs=1e-10)


def test_agreement_compares_the_reconstructions_label_with_the_images_own(setup):
  config, evaluator, (train, train_labels), (test, test_labels) = setup
  # G draws one training image of the classifier's whatever z is: every reconstruction is
  # labelled as that image, so it agrees exactly with the test images of that label. The
  # image is one whose label's share of the test set differs from the pixel 1-NN's
  # accuracy, so the two metrics cannot stand in for each other.
  pixel_accuracy = np.mean(_nearest_labels(train, train_labels, test) == test_labels)
  shares = np.array([np.mean(test_labels == label) for label in train_labels])
  chosen = int(np.argmax(np.abs(shares - pixel_accuracy) > 0.05))
  assert abs(shares[chosen] - pixel_accuracy) > 0.05
  image = train[chosen].reshape(1, config.resolution, config.resolution, 3) * 2.0 - 1.0
  constant = lambda x: jax.numpy.broadcast_to(
      jax.numpy.asarray(image, jax.numpy.float32), (len(x),) + image.shape[1:])
  metrics = evaluator.run(_predict(config, constant), None, step=1)
  assert metrics["reconstruction_label_agreement"] == pytest.approx(shares[chosen], abs=1e-9)
  assert metrics["reconstruction_mse"] == pytest.approx(
      np.mean((test - train[chosen]) ** 2), rel=1e-5)
  assert metrics["knn_1_accuracy_cosine_pixels"] == pytest.approx(pixel_accuracy, abs=1e-9)


def test_coloured_reconstructions_get_the_label_of_their_three_channels(setup):
  # MNIST is grey: the evaluator classifies the channels' mean, which must pick the same
  # neighbour as the cosine over all three channels for any colouring of G's output. G tints
  # each pixel of x differently; the tint is one whose labels differ from the untinted
  # images' and from those of any one channel alone, so neither can stand in.
  config, evaluator, (train, train_labels), (test, test_labels) = setup
  side = config.resolution
  agreement = lambda queries, reference: np.mean(
      _nearest_labels(reference, train_labels, queries) == test_labels)
  channels = lambda pixels: pixels.reshape(len(pixels), side * side, 3)
  untinted = agreement(test, train)
  for seed in range(100):
    tint = np.random.default_rng(seed).uniform(0.0, 2.0, (1, side, side, 3))
    tinted = (test.reshape(-1, side, side, 3) * tint).reshape(len(test), -1)
    expected = agreement(tinted, train)
    one_channel = [agreement(channels(tinted)[..., c], channels(train)[..., c])
                   for c in range(3)]
    if expected != untinted and expected not in one_channel:
      break
  else:
    pytest.fail("no tint separates the three-channel classifier from the others")
  coloured = lambda x: ((to_discriminator_resolution(x, side) + 1.0)
                        * jax.numpy.asarray(tint, jax.numpy.float32) - 1.0)
  metrics = evaluator.run(_predict(config, coloured), None, step=1)
  assert metrics["reconstruction_label_agreement"] == pytest.approx(expected, abs=1e-9)
  assert metrics["reconstruction_mse"] == pytest.approx(np.mean((tinted - test) ** 2), rel=1e-4)
