"""The tests' small MNIST (tests/mnist_mock.py) is a prepared TFDS dataset: TFDS reads its
splits, slices and shards as it reads MNIST's own."""

import numpy as np
import tensorflow_datasets as tfds

import mnist_mock


def _ids(builder, split):
  examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
  images = np.stack([example["image"] for example in examples])
  assert images.dtype == np.uint8 and images.shape[1:] == mnist_mock.IMAGE_SHAPE
  ids = mnist_mock.ids_of(images)
  assert [int(example["label"]) for example in examples] == [mnist_mock.mock_label(i)
                                                             for i in ids]
  return ids


def test_tfds_reads_every_split_and_slice_in_order(mnist_dir):
  builder = tfds.builder("mnist", data_dir=str(mnist_dir))
  assert builder.is_prepared()
  for split, size in mnist_mock.SPLIT_SIZES.items():
    first = mnist_mock.SPLIT_OFFSETS[split]
    assert _ids(builder, split) == list(range(first, first + size))
  # A slice across shards reads its part of each (shards of 5: 3 + 5 + 2 examples).
  assert _ids(builder, "train[2:12]") == list(range(2, 12))
  assert [i.take for i in builder.info.splits["train[2:12]"].file_instructions] == [3, 5, 2]


def test_each_split_is_in_its_declared_shards(mnist_dir):
  builder = tfds.builder("mnist", data_dir=str(mnist_dir))
  for split, lengths in mnist_mock.SHARD_LENGTHS.items():
    instructions = builder.info.splits[split].file_instructions
    assert [i.take for i in instructions] == lengths
    assert len({i.filename for i in instructions}) == len(lengths)
