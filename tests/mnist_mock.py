"""A small MNIST for tests: TFDS's mock_data with real split metadata and slice-aware reads.

TFDS's default mock yields the same examples for every split and slice, and has no split
sizes, so it could not tell whether processes read different parts. This mock gives TFDS real
metadata (20 train and 11 test examples) and a reader that honours the split's slice, with a
distinct random image per example: an example is identified by its image. The fixtures
`metadata_dir` and `mock_mnist` (tests/conftest.py) put it in place.
"""

import contextlib
import pathlib
import re
from unittest import mock

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking as tfds_mocking

from bigbigan.config_files import apply_overrides, load_config

REPO = pathlib.Path(__file__).resolve().parents[1]
# configs/mnist_bigan.py shrunk to seconds; batches divide over 8 devices.
TINY_MNIST = {"batch_size": 8, "total_steps": 2, "log_every_steps": 1, "eval_every_steps": 2,
              "checkpoint_every_steps": 2, "eval_batch_size": 8,
              "generator.hidden_sizes": (16, 16), "encoder.hidden_sizes": (16, 16),
              "discriminator.hidden_sizes": (16, 16)}

IMAGE_SHAPE = (28, 28, 1)  # TFDS's MNIST images.
SPLIT_SIZES = {"train": 20, "test": 11}
# Example ids of the two splits do not overlap, so a test split can never pass for a train one.
SPLIT_OFFSETS = {"train": 0, "test": 1000}


def mock_image(example_id: int) -> np.ndarray:
  return np.random.default_rng(example_id).integers(0, 256, IMAGE_SHAPE, dtype=np.uint8)


def mock_label(example_id: int) -> int:
  return example_id % 10


def ids_of(images: np.ndarray) -> list[int]:
  """The example id of each flattened (unpermuted) image."""
  by_bytes = {mock_image(i).tobytes(): i
              for split, size in SPLIT_SIZES.items()
              for i in range(SPLIT_OFFSETS[split], SPLIT_OFFSETS[split] + size)}
  return [by_bytes[image.reshape(IMAGE_SHAPE).tobytes()] for image in images]


def mock_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
  """Replaces `FileReaderBuilder._as_dataset`: the examples that `split`'s slice selects.

  As TFDS's MNIST stores its images as PNG, `decoders={"image": tfds.decode.SkipDecoding()}`
  gives each image's PNG bytes, and no decoder the decoded uint8 pixels.
  """
  del read_config, shuffle_files, kwargs
  ids = []
  # The file instructions are what TFDS would read: (file, skip, take) per split and slice.
  for instruction in self.info.splits[split].file_instructions:
    split_name = re.search(r"mnist-(\w+)\.tfrecord", instruction.filename).group(1)
    start = SPLIT_OFFSETS[split_name] + instruction.skip
    ids.extend(range(start, start + instruction.take))
  if isinstance((decoders or {}).get("image"), tfds.decode.SkipDecoding):
    images = [tf.io.encode_png(mock_image(i)).numpy() for i in ids]
  else:
    images = np.stack([mock_image(i) for i in ids]).reshape(-1, *IMAGE_SHAPE)
  return tf.data.Dataset.from_tensor_slices({
      "image": images, "label": np.array([mock_label(i) for i in ids], np.int64)})



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


def tiny_mnist_config(variant: str = "paper", **overrides):
  """configs/mnist_bigan.py:`variant` with TINY_MNIST and `overrides` ({"field.sub": value})."""
  config = load_config(f"{REPO}/configs/mnist_bigan.py:{variant}")
  return apply_overrides(config, {**TINY_MNIST, **overrides})


def tiny_bigbigan_config(variant: str = "", **overrides):
  """configs/bigbigan_base.py:tiny (with `variant`) shrunk to seconds on this mock.

  Without k-NN in `eval_metrics`, nothing selects a best checkpoint (selection_metric '').
  """
  if "knn" not in overrides.get("eval_metrics", ("knn",)):
    overrides.setdefault("selection_metric", "")
  config = load_config(f"{REPO}/configs/bigbigan_base.py:tiny{',' + variant if variant else ''}")
  return apply_overrides(config, {
      "batch_size": 8, "eval_batch_size": 8, "total_steps": 2, "log_every_steps": 1,
      "eval_every_steps": 2, "checkpoint_every_steps": 2, "encoder.head_width": 32,
      "discriminator.latent_width": 32, "discriminator.joint_width": 32,
      # The paper's two D steps per E/G step and equal G and E learning rates.
      "d_steps": 2, "optimizer.encoder_learning_rate_multiplier": 1.0,
      # The mock's 20 training images: 12 to fit the probe (and for k-NN), 8 to stop it.
      "probe_train_split": "train[8:]", "knn_train_split": "train[8:]",
      "probe_train_val_split": "train[:8]", "probe_epochs": 3, "knn_ks": (1, 5),
      "report_neighbour_pool": 8,
      # Standing statistics over 2 batches of 8 (the configs' 16 cost compile-free seconds,
      # but seconds all the same in every trainer test).
      "standing_stats_batches": 2, **overrides})


def fixed_image_batches(config, start_step: int, process_index: int = 0,
                        process_count: int = 1):
  """This process's rows of a fixed global batch per step, [d_steps, rows, R, R, 3] uint8:
  the same global batches for any number of processes."""
  side, rows = config.encoder.resolution, config.batch_size // process_count
  step = start_step
  while True:
    images = np.random.default_rng(step).integers(
        0, 256, (config.d_steps, config.batch_size, side, side, 3), dtype=np.uint8)
    yield images[:, process_index * rows:(process_index + 1) * rows]
    step += 1


# How long a silent peer may stand still before the job stops (bigbigan.distributed); a
# starved process still beats from its watch thread.
PEER_TIMEOUT_SECONDS = 60


class _NoFileSystemMock:
  """Stands in for TFDS's MockFs: `tfds.testing.mock_data` opens one around every mocked
  `builder.as_dataset`, and MockFs sends every file operation of the process, in every
  thread, into a temporary directory while it is open. An asynchronous orbax save still
  writing when the trainer builds its next dataset (the standing statistics' stream, an
  evaluation split) then writes to, or looks for, `/tmp/tmpXXXX/<its path>` and fails with
  "No such file or directory". The mock's metadata directory exists, so nothing needs the
  redirection."""

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    return False

  def add_file(self, path, content=None):  # pylint: disable=unused-argument
    pass


@contextlib.contextmanager
def mock_data(data_dir: str, as_dataset_fn=None):
  """`tfds.testing.mock_data` serving this module's small MNIST (or `as_dataset_fn`'s
  examples) from the metadata in `data_dir`, without TFDS's file-system redirection."""
  with tfds.testing.mock_data(data_dir=str(data_dir),
                              as_dataset_fn=as_dataset_fn or mock_as_dataset), \
      mock.patch.object(tfds_mocking.test_utils, "MockFs", _NoFileSystemMock):
    yield


def _train_in_subprocess(argv: list[str]) -> None:
  """`python tests/mnist_mock.py MODEL METADATA_DIR WORKDIR PROCESS_ID NUM_PROCESSES PORT
  [TOTAL_STEPS START_STEP]`.

  Trains a tiny config on this mock inside one process of a jax.distributed job, for the
  multi-process tests: TFDS's mock only patches the process that enters it. MODEL "bigan":
  the tiny MNIST BiGAN on the mock's batches; "bigbigan": the tiny BigBiGAN for TOTAL_STEPS
  on `fixed_image_batches` from START_STEP (where its workdir's checkpoint resumes).
  """
  model, metadata_dir, workdir, process_id, num_processes, port, *steps = argv
  import jax  # pylint: disable=g-import-not-at-top
  jax.distributed.initialize(f"localhost:{port}", int(num_processes), int(process_id))
  from bigbigan import distributed, train  # pylint: disable=g-import-not-at-top
  # As bigbigan.main runs a job: every process leaves together through JAX's shutdown
  # barrier, or all stop within the peer timeout when one fails or dies.
  with distributed.supervised(peer_timeout_seconds=PEER_TIMEOUT_SECONDS), \
      mock_data(metadata_dir):
    # No probe: its L-BFGS over gloo collectives takes minutes on a 2-core machine.
    if model == "bigan":
      train.train_and_evaluate(tiny_mnist_config(eval_linear_probe=False), workdir)
    else:
      total_steps, start_step = map(int, steps)
      config = tiny_bigbigan_config(total_steps=total_steps, eval_metrics=())
      train.train_and_evaluate(config, workdir, train_batches=fixed_image_batches(
          config, start_step, jax.process_index(), jax.process_count()))


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  _train_in_subprocess(sys.argv[1:])
