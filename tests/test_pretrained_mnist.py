"""The shipped model, `bigbigan.load("bigbigan-mnist")`: it loads by name with its checksum
verified, and is the model its card describes (tools/make_pretrained_mnist.py wrote both).

The card's figure on the shipped test digits is recomputed from the bundle, and the z_mean
of 16 of them compared with the values the maker stored: weights of another step, or a
bundle re-exported from another run, change both.
"""

import json
import pathlib

import numpy as np
import pytest

import bigbigan
from bigbigan import pretrained
from bigbigan.data import samples
from bigbigan.errors import BundleError
from bigbigan.evaluation import pretrained_reconstructions

REPO = pathlib.Path(__file__).resolve().parents[1]
NAME = "bigbigan-mnist"
Z_MEAN_FIXTURE = REPO / "tests" / "data" / "bigbigan_mnist_z_mean.npz"
# The card's agreement and the recomputed one may differ by float rounding flipping a few
# near-ties of the pixel 1-NN; 3 points is 30 of the 1,000 digits.
AGREEMENT_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def model():
  return bigbigan.load(NAME)


@pytest.fixture(scope="module")
def card():
  return json.loads((pretrained.shipped_models()[NAME] / "card.json").read_text())


def test_the_model_ships_inside_the_package():
  shipped = pretrained.shipped_models()
  assert list(shipped) == [NAME]
  directory = shipped[NAME]
  assert directory.parent.parent == pathlib.Path(bigbigan.__file__).parent
  assert {path.name for path in directory.iterdir()} == {
      "bundle.json", "weights.msgpack", "README.md", "card.json"}
  assert sum(path.stat().st_size for path in directory.iterdir()) <= 15 * 2**20
  # setuptools ships what pyproject's package data names.
  pyproject = (REPO / "pyproject.toml").read_text()
  assert '"pretrained_models/*/*"' in pyproject


def test_it_loads_by_name_with_its_checksum_verified(model, card):
  manifest = json.loads((pretrained.shipped_models()[NAME] / "bundle.json").read_text())
  stored = np.load(Z_MEAN_FIXTURE)
  assert manifest["checksum"] == card["checksum"] == str(stored["checksum"])
  assert model.step == card["step"] and model.has_discriminator


def test_an_unknown_name_lists_the_shipped_ones():
  with pytest.raises(BundleError) as error:
    bigbigan.load("bigbigan-cifar")
  assert str(error.value) == ("no pretrained model is named 'bigbigan-cifar': the shipped ones "
                              "are bigbigan-mnist; else pass a bundle's path (local or gs://)")
  with pytest.raises(BundleError, match="TF-Hub modules cannot be converted yet"):
    bigbigan.load("bigbigan-resnet50")


def test_z_mean_of_fixed_digits_equals_the_stored_values(model):
  stored = np.load(Z_MEAN_FIXTURE)["z_mean"]
  images, _ = samples.mnist_sample("test", len(stored))
  z_mean = model.encode(images)["z_mean"]
  # Float rounding of another machine's kernels: about 1e-6 of the scale.
  np.testing.assert_allclose(z_mean, stored, atol=1e-5 * np.abs(stored).max(), rtol=0)


def test_reconstructions_keep_the_digit_as_the_card_says(model, card):
  test_images, test_labels = samples.mnist_sample("test")
  train_images, train_labels = samples.mnist_sample("train")
  assert len(test_images) >= 1000
  figures = pretrained_reconstructions.reconstruction_agreement(
      model, test_images, test_labels, train_images, train_labels)
  stated = card["shipped_digits"]
  assert abs(figures["reconstruction_label_agreement"]
             - stated["reconstruction_label_agreement"]) <= AGREEMENT_TOLERANCE, figures
  # The classifier and the real digits involve no model: they agree exactly.
  assert figures["knn_1_accuracy_cosine_pixels"] == stated["knn_1_accuracy_cosine_pixels"]
  np.testing.assert_allclose(figures["reconstruction_mse"], stated["reconstruction_mse"],
                             rtol=1e-3)
  readme = (pretrained.shipped_models()[NAME] / "README.md").read_text()
  assert f"{100 * stated['reconstruction_label_agreement']:.2f}%" in readme
