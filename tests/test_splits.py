"""The config's TFDS splits are checked against the dataset's metadata before a run starts:
splits the dataset lacks, empty slices and slices past a split's end are refused, and so are
evaluation splits that share examples with the splits a model or probe learns from."""

import os
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from bigbigan import train
from bigbigan.config_files import load_config
from bigbigan.data import pipeline
from bigbigan.data.splits import split_ranges, validate_splits
from bigbigan.errors import ConfigError
from conftest import FAST_COMPILE, REPO
from mnist_mock import tiny_bigbigan_config, tiny_mnist_config

# MNIST's real split sizes, for the shipped configs' slices (train[10000:] and the like).
FULL_SIZES = {"train": 60_000, "test": 10_000}


@pytest.fixture(scope="module")
def full_metadata_dir(tmp_path_factory):
  """A TFDS data_dir with the metadata (no data) of an MNIST of the real split sizes."""
  data_dir = tmp_path_factory.mktemp("tfds_full")
  _write_metadata(str(data_dir), "mnist", FULL_SIZES)
  return str(data_dir)


def _refusal(config) -> str:
  with pytest.raises(ConfigError) as error:
    validate_splits(config)
  message = str(error.value)
  assert "\n" not in message
  return message


@pytest.mark.parametrize("spec, want", [
    ("train", {"train": [(0, 60_000)]}),
    ("train[10000:]", {"train": [(10_000, 60_000)]}),
    ("train[:10000]", {"train": [(0, 10_000)]}),
    ("train[:10%]", {"train": [(0, 6_000)]}),
    ("test[-5%:]", {"test": [(9_500, 10_000)]}),
    ("train[:100] + test", {"train": [(0, 100)], "test": [(0, 10_000)]}),
    ("all", {"train": [(0, 60_000)], "test": [(0, 10_000)]}),
])
def test_split_ranges_resolve_slices_as_tfds_reads_them(full_metadata_dir, spec, want):
  splits = pipeline.prepared_builder("mnist", full_metadata_dir).info.splits
  assert split_ranges(splits, spec) == want
  # The same number of examples as TFDS's own reading of the spec.
  assert sum(stop - start for ranges in want.values() for start, stop in ranges) == (
      splits[spec.replace(" ", "")].num_examples)


@pytest.mark.parametrize("spec, reason", [
    ("validation", "there is no split 'validation'"),
    ("train[60000:]", "'train[60000:]' selects no example of split 'train'"),
    ("train[:70000]", "'train[:70000]' reaches past the end of split 'train', which has 60000"),
    ("train[5:3]", "'train[5:3]' selects no example"),
    ("train[:0.0001%]", "selects no example"),
    ("train[:10]+valid[:5]", "there is no split 'valid'"),
    ("train[", "'train[' is not a TFDS split"),
])
def test_split_ranges_refuse_what_cannot_be_read(full_metadata_dir, spec, reason):
  splits = pipeline.prepared_builder("mnist", full_metadata_dir).info.splits
  with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("+", r"\+")):
    split_ranges(splits, spec)


def test_a_missing_split_names_the_field_and_the_dataset_splits(mnist_dir):
  message = _refusal(tiny_mnist_config(data_dir=str(mnist_dir), eval_split="validation"))
  assert message.startswith("config.eval_split='validation' cannot be read from mnist: there "
                            "is no split 'validation' (mnist's splits: ")
  assert "train, 20 examples" in message and "test, 11 examples" in message
  assert "name one of them, or a non-empty slice of one" in message


@pytest.mark.parametrize("field, spec, reason", [
    ("probe_train_split", "train[10000:]", "reaches past the end of split 'train', which has 20"),
    ("knn_train_split", "train[20:]", "selects no example of split 'train'"),
    ("fid_reference_split", "validation", "there is no split 'validation'"),
    ("train_split", "", "must be a TFDS split such as 'train'"),
])
def test_every_split_field_is_checked(mnist_dir, field, spec, reason):
  message = _refusal(tiny_bigbigan_config(data_dir=str(mnist_dir), **{field: spec}))
  assert message.startswith(f"config.{field}={spec!r}") and reason in message


@pytest.mark.parametrize("overrides, first, second, shared", [
    # The brief's case: the test images inside the probe's training images.
    ({"eval_split": "train[:100]", "probe_train_split": "train[50:]",
      "probe_train_val_split": "test[:100]"},
     "probe_train_split", "eval_split", "examples 50..99 of split 'train'"),
    ({"probe_train_val_split": "train[:10000]", "probe_train_split": "train[9000:]"},
     "probe_train_split", "probe_train_val_split", "examples 9000..9999 of split 'train'"),
    ({"probe_train_val_split": "test[:1000]"},
     "probe_train_val_split", "eval_split", "examples 0..999 of split 'test'"),
    ({"eval_split": "train[:5000]", "probe_train_val_split": "test[:5000]"},
     "train_split", "eval_split", "examples 0..4999 of split 'train'"),
    ({"knn_train_split": "train+test"},
     "knn_train_split", "eval_split", "examples 0..9999 of split 'test'"),
])
def test_overlapping_evaluation_splits_are_refused(full_metadata_dir, overrides, first, second,
                                                   shared):
  # The shipped tiny config's splits, with `overrides`.
  config = tiny_bigbigan_config(data_dir=full_metadata_dir, **{
      "probe_train_split": "train[10000:]", "probe_train_val_split": "train[:10000]",
      "knn_train_split": "train[10000:]", **overrides})
  message = _refusal(config)
  assert message.startswith(f"config.{first}={config[first]!r} and "
                            f"config.{second}={config[second]!r} share {shared}: ")
  assert "make them disjoint" in message


def test_the_mnist_eval_split_must_not_be_trained_on(full_metadata_dir):
  message = _refusal(tiny_mnist_config(data_dir=full_metadata_dir, eval_split="train[:1000]"))
  assert message.startswith("config.train_split='train' and config.eval_split='train[:1000]' "
                            "share examples 0..999 of split 'train'")


def test_disjoint_and_shared_training_splits_are_accepted(full_metadata_dir, mnist_dir):
  # The shipped tiny config: k-NN searches the probe's training images, FID's reference is
  # the test split the probe is evaluated on; neither is an overlap that matters.
  config = load_config(f"{REPO}/configs/bigbigan_base.py:tiny")
  config.data_dir = full_metadata_dir
  assert config.knn_train_split == config.probe_train_split
  assert config.fid_reference_split == config.eval_split
  validate_splits(config)
  # Percent slices, sums of slices, and the small mock's own slices.
  validate_splits(tiny_bigbigan_config(
      data_dir=full_metadata_dir, probe_train_split="train[20%:]+test[5000:]",
      probe_train_val_split="train[:20%]", eval_split="test[:5000]",
      knn_train_split="train[20%:50%]"))
  validate_splits(tiny_bigbigan_config(data_dir=str(mnist_dir)))
  for variant in ("paper", "conditional,fast"):
    validate_splits(tiny_mnist_config(variant, data_dir=full_metadata_dir))


def _write_metadata(data_dir: str, dataset: str, sizes: dict) -> None:
  """TFDS metadata (no data) of `dataset` with splits of `sizes`: what split checks read."""
  builder = tfds.builder(dataset, data_dir=data_dir)
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=name, shard_lengths=[size], num_bytes=0,
                          filename_template=tfds.core.ShardedFileTemplate(
                              data_dir=builder.data_path, template="{SPLIT}.{SHARD_X_OF_Y}",
                              dataset_name=dataset, split=name, filetype_suffix="tfrecord"))
      for name, size in sizes.items()]))
  builder.data_path.mkdir(parents=True)
  builder.info.write_to_directory(builder.data_path)


@pytest.mark.parametrize("config_file", ["bigbigan_base.py", "bigbigan_base.py:resnet101",
                                         "resnet50.py", "revnet4x.py"])
def test_the_shipped_imagenet_configs_are_accepted(tmp_path, config_file):
  _write_metadata(str(tmp_path), "imagenet2012", {"train": 1_281_167, "validation": 50_000})
  config = load_config(f"{REPO}/configs/{config_file}")
  config.data_dir = str(tmp_path)
  validate_splits(config)


def test_the_mixture_has_no_splits_to_check(tiny_config):
  validate_splits(tiny_config("bigan"))  # Reads no dataset metadata.


def test_the_trainer_refuses_a_missing_split_before_writing(mock_mnist, tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError, match=r"^config.eval_split='validation' cannot be read"):
    train.train_and_evaluate(tiny_mnist_config(data_dir=mock_mnist, eval_split="validation"),
                             str(workdir))
  assert not workdir.exists()
  with pytest.raises(ConfigError, match=r"^config.probe_train_split='train\[4:\]' and "
                                        r"config.probe_train_val_split='train\[:8\]' share"):
    train.train_and_evaluate(tiny_bigbigan_config(data_dir=mock_mnist,
                                                  probe_train_split="train[4:]"), str(workdir))
  assert not workdir.exists()


@pytest.mark.slow
def test_main_refuses_a_missing_split_in_one_line(mnist_dir, tmp_path):
  # The check reads only the dataset's metadata, so the CLI in a subprocess sees the
  # mock's (TFDS's mock of the examples patches only the process that enters it).
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "bigbigan.main", "--config=configs/mnist_bigan.py:smoke",
       f"--workdir={workdir}", f"--config.data_dir={mnist_dir}",
       "--config.eval_split=validation"],
      cwd=REPO, env={**os.environ, "XLA_FLAGS": FAST_COMPILE}, capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 1, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if "bigbigan: error:" in line]
  assert errors == [result.stderr.strip().splitlines()[-1]]
  assert errors[0].startswith("bigbigan: error: config.eval_split='validation' cannot be read "
                              "from mnist: there is no split 'validation' (mnist's splits: ")
  assert not workdir.exists()
