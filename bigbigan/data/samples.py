"""Datasets that ship inside the package, for runs that must work offline.

`MNIST_SAMPLE_DIR` is a TFDS data_dir holding `mnist/3.0.1/`: the first 6,000 training and
1,000 test digits of MNIST, the records exactly as `tfds build mnist` writes them
(tools/make_mnist_sample.py). `tfds.builder("mnist", data_dir=MNIST_SAMPLE_DIR)` reads it as
any prepared dataset, through the same input pipeline (configs/quickstart.py).

`mnist_sample(split, count)` reads the same digits as NumPy arrays without TensorFlow (for
the notebook and a `bigbigan.load` install, which has none).

MNIST is by Yann LeCun and Corinna Cortes, under CC BY-SA 3.0
(bigbigan/data/mnist_sample/README.md).
"""

import glob
import io
import os
import struct
from typing import Optional

import numpy as np
from PIL import Image

from bigbigan.errors import DatasetError

MNIST_SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_sample")
# The TFDS name and version of the sample (its directory mnist/3.0.1/).
MNIST_SAMPLE_DATASET = "mnist:3.0.1"


def mnist_sample(split: str = "test", count: Optional[int] = None
                 ) -> tuple[np.ndarray, np.ndarray]:
  """The first `count` digits of the sample's `split`, read without TensorFlow.

  For the notebook and `bigbigan.load` users, whose install has no TensorFlow: the same
  records the TFDS pipeline reads, in their order, parsed here (the TFRecord framing and the
  tf.train.Example message) and their PNGs decoded by Pillow.

  Args:
    split: "train" (6,000 digits) or "test" (1,000).
    count: how many, from the first; all of them if None.

  Returns:
    images uint8 [N, 28, 28, 1] and labels int64 [N] (0-9).

  Raises:
    ValueError: an unknown split, or a count larger than the split.
    DatasetError: a record file that is truncated or not MNIST's.
  """
  directory = os.path.join(MNIST_SAMPLE_DIR, "mnist", MNIST_SAMPLE_DATASET.split(":")[1])
  paths = sorted(glob.glob(os.path.join(directory, f"mnist-{split}.tfrecord-*")))
  if not paths:
    raise ValueError(f"split {split!r}: the MNIST sample has 'train' and 'test'")
  images, labels = [], []
  for path in paths:
    with open(path, "rb") as f:
      for record in _tfrecords(f.read(), path):
        if count is not None and len(images) == count:
          break
        features = _example_features(record)
        try:
          image = np.asarray(Image.open(io.BytesIO(features["image"])))
          label = features["label"]
        except (KeyError, OSError) as error:
          raise DatasetError(f"{path}: a record is not an MNIST example ({error})") from None
        images.append(image.reshape(28, 28, 1))
        labels.append(label)
  if count is not None and len(images) < count:
    raise ValueError(f"count={count}: the sample's {split} split has {len(images)} digits")
  return np.stack(images), np.asarray(labels, np.int64)


def _tfrecords(data: bytes, path: str):
  """The records of a TFRecord file: each a little-endian uint64 length, its CRC, the
  record, its CRC (the CRCs are not checked: the pipeline's reader checks them)."""
  offset = 0
  while offset < len(data):
    if offset + 12 > len(data):
      raise DatasetError(f"{path}: truncated at byte {offset}")
    (length,) = struct.unpack_from("<Q", data, offset)
    start, end = offset + 12, offset + 12 + length
    if end + 4 > len(data):
      raise DatasetError(f"{path}: truncated at byte {offset}")
    yield data[start:end]
    offset = end + 4


def _varint(data: bytes, offset: int) -> tuple[int, int]:
  value, shift = 0, 0
  while True:
    byte = data[offset]
    value |= (byte & 0x7F) << shift
    offset, shift = offset + 1, shift + 7
    if byte < 0x80:
      return value, offset


def _fields(message: bytes):
  """(field number, wire type, value) of a protocol buffer message's fields: an int for a
  varint, bytes for a length-delimited field (fixed-width fields do not occur here)."""
  offset = 0
  while offset < len(message):
    key, offset = _varint(message, offset)
    number, wire_type = key >> 3, key & 7
    if wire_type == 0:
      value, offset = _varint(message, offset)
    elif wire_type == 2:
      length, offset = _varint(message, offset)
      value, offset = message[offset:offset + length], offset + length
    else:
      raise DatasetError(f"unexpected protocol buffer wire type {wire_type}")
    yield number, wire_type, value


def _example_features(record: bytes) -> dict[str, object]:
  """A tf.train.Example's features: a bytes feature's first value, or an int64 one's."""
  features = {}
  for _, _, features_message in _fields(record):  # Example.features
    for _, _, entry in _fields(features_message):  # Features.feature: map entries
      entry_fields = {number: value for number, _, value in _fields(entry)}
      name, feature = entry_fields[1].decode(), entry_fields.get(2, b"")
      for kind, _, values in _fields(feature):  # Feature: 1 bytes_list, 3 int64_list
        first = next(_fields(values), None) if kind in (1, 3) else None
        if kind == 1 and first:
          features[name] = first[2]
        elif kind == 3 and first:
          # Packed int64s (one length-delimited field), or one varint.
          features[name] = _varint(first[2], 0)[0] if first[1] == 2 else first[2]
  return features
