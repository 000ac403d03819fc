"""The README's first command, `python -m bigbigan.main --config=configs/quickstart.py`, end to
end on the MNIST sample that ships in the package: fewer steps, the same code path."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from bigbigan.config_files import load_config
from bigbigan.data import samples
from bigbigan.errors import DatasetError
from conftest import FAST_COMPILE, REPO


def test_the_shipped_sample_is_a_prepared_mnist():
  builder = tfds.builder(samples.MNIST_SAMPLE_DATASET, data_dir=samples.MNIST_SAMPLE_DIR)
  assert builder.is_prepared()
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
      "train": 6000, "test": 1000}
  labels = [int(e["label"]) for e in tfds.as_numpy(builder.as_dataset(split="test"))]
  assert sorted(set(labels)) == list(range(10)) and len(labels) == 1000
  config = load_config(str(REPO / "configs" / "quickstart.py"))
  assert (config.dataset, config.data_dir) == (samples.MNIST_SAMPLE_DATASET,
                                               samples.MNIST_SAMPLE_DIR)


@pytest.mark.parametrize("split", ["train", "test"])
def test_the_sample_reads_without_tensorflow_as_tfds_reads_it(split):
  builder = tfds.builder(samples.MNIST_SAMPLE_DATASET, data_dir=samples.MNIST_SAMPLE_DIR)
  examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
  images, labels = samples.mnist_sample(split)
  assert images.dtype == np.uint8 and images.shape == (len(examples), 28, 28, 1)
  np.testing.assert_array_equal(images, np.stack([e["image"] for e in examples]))
  np.testing.assert_array_equal(labels, [e["label"] for e in examples])
  first, first_labels = samples.mnist_sample(split, count=5)
  np.testing.assert_array_equal(first, images[:5])
  np.testing.assert_array_equal(first_labels, labels[:5])


def test_the_sample_reader_refuses_what_it_cannot_read():
  with pytest.raises(ValueError, match="the MNIST sample has 'train' and 'test'"):
    samples.mnist_sample("validation")
  with pytest.raises(ValueError, match="the sample's test split has 1000 digits"):
    samples.mnist_sample("test", count=1001)
  path = next(pathlib.Path(samples.MNIST_SAMPLE_DIR).rglob("mnist-test.tfrecord-*"))
  data = path.read_bytes()
  with pytest.raises(DatasetError, match="truncated at byte 0"):
    list(samples._tfrecords(data[:100], "f"))  # pylint: disable=protected-access


@pytest.mark.slow(seconds=60)  # Compiles and trains BigBiGAN, then the evaluation: about a minute.
def test_quickstart_trains_evaluates_and_says_where_its_files_are(tmp_path):
  workdir = tmp_path / "quickstart"
  steps = 8
  # The evaluation's probe and 1-NN fitted on 1,000 training digits rather than 5,000: the
  # same code path with a fifth of the encoding, done twice (trained and random-init E).
  overrides = {"total_steps": steps, "eval_every_steps": steps,
               "checkpoint_every_steps": steps, "log_every_steps": 4, "ema_start_step": 4,
               "probe_epochs": 2, "standing_stats_batches": 2,
               "probe_train_split": "train[1000:2000]", "knn_train_split": "train[1000:2000]"}
  # One CPU device, as a user's laptop has; 8 steps compile more than they run, so quick
  # compilation (conftest.py).
  env = {**os.environ, "XLA_FLAGS": FAST_COMPILE}
  result = subprocess.run(
      [sys.executable, "-m", "bigbigan.main", "--config=configs/quickstart.py",
       f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in overrides.items())],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]

  final = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  final = {k: v for record in final if record["step"] == steps for k, v in record.items()}
  report = result.stdout.splitlines()
  assert report[0] == f"Finished at step {steps}."
  for metric in ("knn_1_accuracy_cosine", "linear_accuracy"):
    # The printed table is the run's own final evaluation, learned beside random init.
    row = next(line.split() for line in report if line.strip().startswith(metric + " "))
    assert row == [metric, f"{final[metric]:.2%}", f"{final[metric + '_random_init']:.2%}"]
  figure = f"reconstructions_{steps:07d}.png"
  assert (workdir / figure).exists()
  assert report[-1].startswith(f"Run files in {workdir}: config.json, metrics.jsonl, "
                               "checkpoints/") and figure in report[-1]
  assert (workdir / "checkpoints" / str(steps)).is_dir()
