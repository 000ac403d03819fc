"""bigbigan.evaluation.pretrained_reconstructions on stand-in models whose reconstructions
are known: a perfect one keeps every label the classifier gets right, with zero error; one
that always draws the same reference digit keeps exactly the labels of that digit's class.
And against a float64 reference of the pixel 1-NN, on a real resize."""

import numpy as np

from bigbigan.evaluation import pretrained_reconstructions as pr


class StandIn:
  """A model's interface (resolutions and `reconstruct`) with reconstructions given by
  `draw(images at G's resolution)`."""

  resolution, encoder_resolution = 8, 16

  def __init__(self, draw):
    self._draw = draw

  def reconstruct(self, images, use_sample=True):
    assert not use_sample  # The measurement reconstructs from z_mean, as the evaluator.
    return self._draw(pr.at_generator_resolution(self, images))


def _digits(count, seed):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (count, 6, 6, 1), dtype=np.uint8),
          rng.integers(0, 3, count))


def test_a_perfect_reconstruction_keeps_what_the_classifier_gets_right():
  images, labels = _digits(40, 0)
  reference, reference_labels = _digits(60, 1)
  figures = pr.reconstruction_agreement(StandIn(lambda real: real), images, labels,
                                        reference, reference_labels)
  assert figures["reconstruction_label_agreement"] == figures["knn_1_accuracy_cosine_pixels"]
  assert figures["reconstruction_mse"] == 0.0


def test_one_drawn_digit_keeps_its_class_only():
  images, labels = _digits(40, 2)
  reference, reference_labels = _digits(60, 3)
  drawn = pr.at_generator_resolution(StandIn(None), reference[:1])
  model = StandIn(lambda real: np.repeat(drawn, len(real), axis=0))
  figures = pr.reconstruction_agreement(model, images, labels, reference, reference_labels)
  assert figures["reconstruction_label_agreement"] == np.mean(labels == reference_labels[0])


def test_the_classifier_is_the_cosine_1nn_of_the_channels_mean():
  images, labels = _digits(30, 4)
  reference, reference_labels = _digits(50, 5)
  model = StandIn(lambda real: real)
  figures = pr.reconstruction_agreement(model, images, labels, reference, reference_labels)
  real = (pr.at_generator_resolution(model, images).astype(np.float64) + 1) / 2
  pool = (pr.at_generator_resolution(model, reference).astype(np.float64) + 1) / 2
  queries, keys = real.mean(-1).reshape(30, -1), pool.mean(-1).reshape(50, -1)
  cosine = (queries @ keys.T) / np.outer(np.linalg.norm(queries, axis=1),
                                          np.linalg.norm(keys, axis=1))
  want = np.mean(reference_labels[cosine.argmax(axis=1)] == labels)
  assert figures["knn_1_accuracy_cosine_pixels"] == want
  # Framed at E's 16 pixels, then averaged 2x2 to G's 8.
  assert real.shape == (30, 8, 8, 3)
