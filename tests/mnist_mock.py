"""A small MNIST for tests: TFDS's mock_data with real split metadata and slice-aware reads.

TFDS's default mock yields the same examples for every split and slice, and has no split
sizes, so it could not tell whether processes read different parts. This mock gives TFDS real
metadata (20 train and 11 test examples) and a reader that honours the split's slice, with a
distinct random image per example: an example is identified by its image. The fixtures
`metadata_dir` and `mock_mnist` (tests/conftest.py) put it in place.
"""

import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from bigbigan.data import pipeline

SPLIT_SIZES = {"train": 20, "test": 11}
# Example ids of the two splits do not overlap, so a test split can never pass for a train one.
SPLIT_OFFSETS = {"train": 0, "test": 1000}


def mock_image(example_id: int) -> np.ndarray:
  return np.random.default_rng(example_id).integers(0, 256, pipeline.MNIST_IMAGE_SHAPE,
                                                    dtype=np.uint8)


def mock_label(example_id: int) -> int:
  return example_id % 10


def ids_of(images: np.ndarray) -> list[int]:
  """The example id of each flattened (unpermuted) image."""
  by_bytes = {mock_image(i).tobytes(): i
              for split, size in SPLIT_SIZES.items()
              for i in range(SPLIT_OFFSETS[split], SPLIT_OFFSETS[split] + size)}
  return [by_bytes[image.reshape(pipeline.MNIST_IMAGE_SHAPE).tobytes()] for image in images]


def mock_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
  """Replaces `FileReaderBuilder._as_dataset`: the examples that `split`'s slice selects."""
  del decoders, read_config, shuffle_files, kwargs
  ids = []
  # The file instructions are what TFDS would read: (file, skip, take) per split and slice.
  for instruction in self.info.splits[split].file_instructions:
    split_name = re.search(r"mnist-(\w+)\.tfrecord", instruction.filename).group(1)
    start = SPLIT_OFFSETS[split_name] + instruction.skip
    ids.extend(range(start, start + instruction.take))
  return tf.data.Dataset.from_tensor_slices({
      "image": np.stack([mock_image(i) for i in ids]).reshape(-1, *pipeline.MNIST_IMAGE_SHAPE),
      "label": np.array([mock_label(i) for i in ids], np.int64),
  })



def write_metadata(data_dir: str) -> None:
  """Writes MNIST's metadata files (no data) for SPLIT_SIZES under `data_dir`."""
  builder = tfds.builder("mnist", data_dir=str(data_dir))
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(
          name=name, shard_lengths=[size], num_bytes=0,
          filename_template=tfds.core.ShardedFileTemplate(
              data_dir=builder.data_path, template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
              dataset_name="mnist", split=name, filetype_suffix="tfrecord"))
      for name, size in SPLIT_SIZES.items()]))
  builder.data_path.mkdir(parents=True)
  builder.info.write_to_directory(builder.data_path)
