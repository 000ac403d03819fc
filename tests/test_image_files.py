"""data/image_files.py: a folder of class subfolders read without TensorFlow, each image its
central square resized, labels from the sorted class names."""

import numpy as np
import pytest
from PIL import Image

from bigbigan.data import image_files
from bigbigan.errors import DatasetError


def _banded(width, height, centre_value):
  """RGB [height, width]: `centre_value` on the central square, 0 on the sides."""
  pixels = np.zeros((height, width, 3), np.uint8)
  side = min(width, height)
  left, top = (width - side) // 2, (height - side) // 2
  pixels[top:top + side, left:left + side] = centre_value
  return Image.fromarray(pixels)


def test_a_folder_reads_as_labelled_framed_images(tmp_path):
  # Class "b" sorts after "a": label 1. Its images are wide, tall and grey-level; "a" is
  # a PNG and a JPEG, with another suffix case; the text file is ignored.
  (tmp_path / "b" / "nested").mkdir(parents=True)
  (tmp_path / "a").mkdir()
  _banded(60, 30, 200).save(tmp_path / "b" / "wide.png")
  _banded(30, 60, 200).save(tmp_path / "b" / "nested" / "tall.PNG")
  _banded(40, 40, 100).convert("L").save(tmp_path / "a" / "grey.png")
  _banded(40, 40, 100).save(tmp_path / "a" / "photo.JPG", quality=100)
  (tmp_path / "a" / "notes.txt").write_text("not an image")
  images, labels, classes = image_files.read_folder(str(tmp_path), resolution=16)
  assert classes == ["a", "b"]
  assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8
  assert sorted(labels.tolist()) == [0, 0, 1, 1]
  for image, label in zip(images, labels):
    # Only the central square, uniform, remains: none of the black sides.
    np.testing.assert_allclose(image, 100 if label == 0 else 200, atol=2)
  # The order is a function of the seed; count takes the first of it.
  again, again_labels, _ = image_files.read_folder(str(tmp_path), resolution=16)
  np.testing.assert_array_equal(again_labels, labels)
  two, two_labels, _ = image_files.read_folder(str(tmp_path), resolution=16, count=2)
  np.testing.assert_array_equal(two_labels, labels[:2])
  np.testing.assert_array_equal(two, images[:2])


def test_a_missing_or_empty_folder_is_one_line(tmp_path):
  with pytest.raises(DatasetError, match="no such folder"):
    image_files.read_folder(str(tmp_path / "none"), resolution=16)
  (tmp_path / "empty_class").mkdir()
  with pytest.raises(DatasetError, match="lay it out as ROOT/CLASS/IMAGE"):
    image_files.read_folder(str(tmp_path), resolution=16)
