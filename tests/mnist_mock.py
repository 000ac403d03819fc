"""A small MNIST for tests, written as a prepared TFDS dataset: real TFRecord shards of PNGs
and real metadata (20 train examples in 4 shards, 11 test examples in 2), read by TFDS and
the pipeline as any prepared dataset is. Each example has a distinct random image, so an
example is identified by its image (`ids_of`). The fixtures `mnist_dir` and `mock_mnist`
(tests/conftest.py) write it once per test session.
"""

import pathlib
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from bigbigan.config_files import apply_overrides, load_config

REPO = pathlib.Path(__file__).resolve().parents[1]
# configs/mnist_bigan.py shrunk to seconds; batches divide over 8 devices.
TINY_MNIST = {"batch_size": 8, "total_steps": 2, "log_every_steps": 1, "eval_every_steps": 2,
              "checkpoint_every_steps": 2, "eval_batch_size": 8,
              "generator.hidden_sizes": (16, 16), "encoder.hidden_sizes": (16, 16),
              "discriminator.hidden_sizes": (16, 16)}

IMAGE_SHAPE = (28, 28, 1)  # TFDS's MNIST images.
SPLIT_SIZES = {"train": 20, "test": 11}
SHARD_LENGTHS = {"train": [5, 5, 5, 5], "test": [6, 5]}
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


def write_dataset(data_dir: str, image_of: Callable[[int], np.ndarray] = mock_image) -> None:
  """Writes the small MNIST (SPLIT_SIZES examples in SHARD_LENGTHS shards, the image of
  example id i `image_of(i)`, its label `mock_label(i)`) as a prepared TFDS dataset under
  `data_dir`."""
  builder = tfds.builder("mnist", data_dir=str(data_dir))
  template = tfds.core.ShardedFileTemplate(
      data_dir=builder.data_path, template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
      dataset_name="mnist", filetype_suffix="tfrecord")
  builder.data_path.mkdir(parents=True)
  splits = []
  for name, lengths in SHARD_LENGTHS.items():
    split_template = template.replace(split=name)
    first = SPLIT_OFFSETS[name]
    for shard, length in enumerate(lengths):
      with tf.io.TFRecordWriter(str(split_template.sharded_filepath(
          shard_index=shard, num_shards=len(lengths)))) as writer:
        for example_id in range(first, first + length):
          writer.write(builder.info.features.serialize_example(
              {"image": image_of(example_id), "label": mock_label(example_id)}))
      first += length
    splits.append(tfds.core.SplitInfo(name=name, shard_lengths=lengths, num_bytes=0,
                                      filename_template=split_template))
  builder.info.set_splits(tfds.core.SplitDict(splits))
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


def _train_in_subprocess(argv: list[str]) -> None:
  """`python tests/mnist_mock.py MODEL DATA_DIR WORKDIR PROCESS_ID NUM_PROCESSES PORT
  [TOTAL_STEPS START_STEP]`.

  Trains a tiny config on the small MNIST in DATA_DIR (`write_dataset`) inside one process
  of a jax.distributed job, for the multi-process tests. MODEL "bigan":
  the tiny MNIST BiGAN on the mock's batches; "bigbigan": the tiny BigBiGAN for TOTAL_STEPS
  on `fixed_image_batches` from START_STEP (where its workdir's checkpoint resumes).
  """
  model, data_dir, workdir, process_id, num_processes, port, *steps = argv
  import jax  # pylint: disable=g-import-not-at-top
  jax.distributed.initialize(f"localhost:{port}", int(num_processes), int(process_id))
  from bigbigan import distributed, train  # pylint: disable=g-import-not-at-top
  # As bigbigan.main runs a job: every process leaves together through JAX's shutdown
  # barrier, or all stop within the peer timeout when one fails or dies.
  with distributed.supervised(peer_timeout_seconds=PEER_TIMEOUT_SECONDS):
    # No probe: its L-BFGS over gloo collectives takes minutes on a 2-core machine.
    if model == "bigan":
      train.train_and_evaluate(tiny_mnist_config(eval_linear_probe=False, data_dir=data_dir),
                             workdir)
    else:
      total_steps, start_step = map(int, steps)
      config = tiny_bigbigan_config(data_dir=data_dir, total_steps=total_steps,
                                    eval_metrics=())
      train.train_and_evaluate(config, workdir, train_batches=fixed_image_batches(
          config, start_step, jax.process_index(), jax.process_count()))


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  _train_in_subprocess(sys.argv[1:])
