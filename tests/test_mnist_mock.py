"""The tests' TFDS mock leaves the file system alone: a file written while a mocked dataset
is built (as an asynchronous orbax save's thread writes while the trainer builds its next
dataset) lands where it was written, not in TFDS's temporary redirection directory."""

import pytest
import tensorflow_datasets as tfds
from etils import epath

import mnist_mock


def _writes_while_building(target):
  def as_dataset(self, split, **kwargs):
    epath.Path(target).write_text("checkpoint bytes")
    return mnist_mock.mock_as_dataset(self, split, **kwargs)
  return as_dataset


def test_a_file_written_while_a_dataset_is_built_lands_where_it_was_written(metadata_dir,
                                                                           tmp_path):
  target = tmp_path / "written_meanwhile.txt"
  with mnist_mock.mock_data(metadata_dir, as_dataset_fn=_writes_while_building(target)):
    tfds.builder("mnist", data_dir=str(metadata_dir)).as_dataset(split="train")
  assert target.read_text() == "checkpoint bytes"


def test_tfds_own_mock_redirects_it(metadata_dir, tmp_path):
  # What the tests met before: TFDS's MockFs sends the write to /tmp/tmpXXXX/<its path>,
  # whose parent does not exist ("No such file or directory", as orbax's failed saves said).
  target = tmp_path / "written_meanwhile.txt"
  with tfds.testing.mock_data(data_dir=str(metadata_dir),
                              as_dataset_fn=_writes_while_building(target)):
    with pytest.raises(FileNotFoundError, match=f"/tmp/tmp.*{tmp_path}"):
      tfds.builder("mnist", data_dir=str(metadata_dir)).as_dataset(split="train")
  assert not target.exists()
