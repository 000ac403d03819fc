"""MNIST's preprocessing (bigbigan/data/mnist.py): the fixed pixel permutation, and the
permuted images that the pipeline yields from the mock MNIST of tests/mnist_mock.py."""

import numpy as np
import pytest

from bigbigan.data import mnist
from bigbigan.data import pipeline


def all_eval_batches(global_batch_size, process_count, preprocess=None):
  preprocess = preprocess or mnist.mnist_preprocess()
  return [list(pipeline.eval_batches("mnist", "test", global_batch_size, preprocess,
                                     process_index=index, process_count=process_count))
          for index in range(process_count)]


def test_pixel_permutation_is_a_fixed_bijection():
  permutation = mnist.pixel_permutation(0)
  assert permutation.shape == (784,)
  np.testing.assert_array_equal(np.sort(permutation), np.arange(784))
  assert (permutation != np.arange(784)).mean() > 0.99
  np.testing.assert_array_equal(mnist.pixel_permutation(0), permutation)
  assert not np.array_equal(mnist.pixel_permutation(1), permutation)
  with pytest.raises(ValueError, match="permutation"):
    mnist.mnist_preprocess(np.zeros(784, np.int32))


def test_permuted_preprocess_applies_the_same_permutation_to_every_image(mock_mnist):
  permutation = mnist.pixel_permutation(0)
  [plain] = all_eval_batches(4, process_count=1)
  [permuted] = all_eval_batches(4, 1, mnist.mnist_preprocess(permutation))
  for plain_batch, permuted_batch in zip(plain, permuted, strict=True):
    np.testing.assert_array_equal(permuted_batch["image"], plain_batch["image"][:, permutation])
    # Invertible: the inverse permutation gives back the original pixels.
    np.testing.assert_array_equal(permuted_batch["image"][:, np.argsort(permutation)],
                                  plain_batch["image"])
    np.testing.assert_array_equal(permuted_batch["label"], plain_batch["label"])
