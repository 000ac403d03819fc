"""The TFDS input pipeline on the small mock MNIST of tests/mnist_mock.py (real split sizes,
one distinct image per example), with simulated processes: an example is identified by its
image, so the tests can count which examples each process saw."""

import math

import numpy as np
import pytest
import tensorflow as tf

from bigbigan.data import mnist
from bigbigan.data import pipeline
from bigbigan.errors import DatasetError
from mnist_mock import SPLIT_OFFSETS, SPLIT_SIZES, ids_of, mock_image, mock_label


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def all_eval_batches(global_batch_size, process_count, preprocess=None):
  preprocess = preprocess or mnist.mnist_preprocess()
  return [list(pipeline.eval_batches("mnist", "test", global_batch_size, preprocess,
                                     process_index=index, process_count=process_count))
          for index in range(process_count)]


def test_batches_are_uint8_pixels_and_int32_labels_of_the_split(mock_mnist):
  train = take(pipeline.train_batches("mnist", "train", 4, seed=0,
                                      preprocess=mnist.mnist_preprocess()), 5)
  for batch in train:
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (4, 784) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
    ids = ids_of(batch["image"])
    assert all(0 <= i < SPLIT_SIZES["train"] for i in ids)
    np.testing.assert_array_equal(batch["label"], [mock_label(i) for i in ids])
    # The flattening is a row-major reshape of the 28x28 image.
    np.testing.assert_array_equal(batch["image"], [mock_image(i).reshape(-1) for i in ids])

  [evaluation] = all_eval_batches(4, process_count=1)
  for batch in evaluation:
    assert set(batch) == {"image", "label", "mask"}
    assert batch["image"].shape == (4, 784) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
    assert batch["mask"].shape == (4,) and batch["mask"].dtype == np.bool_


def test_num_examples_reads_the_split_sizes(mock_mnist):
  assert pipeline.num_examples("mnist", "train") == 20
  assert pipeline.num_examples("mnist", "test[:5]") == 5


def test_two_processes_read_disjoint_parts_that_cover_the_split(mock_mnist):
  epoch = SPLIT_SIZES["train"] // 2  # Examples per process per epoch.
  seen = []
  for process_index in range(2):
    # Global batch 4 over 2 processes: 2 rows each, so 5 batches are one epoch.
    batches = take(pipeline.train_batches("mnist", "train", 4, seed=0,
                                          preprocess=mnist.mnist_preprocess(),
                                          process_index=process_index, process_count=2), 10)
    assert all(len(batch["image"]) == 2 for batch in batches)
    ids = ids_of(np.concatenate([batch["image"] for batch in batches]))
    first_epoch, second_epoch = ids[:epoch], ids[epoch:]
    assert len(set(first_epoch)) == epoch  # Each example once per epoch.
    assert set(second_epoch) == set(first_epoch)
    assert second_epoch != first_epoch  # Reshuffled for the next epoch.
    seen.append(set(first_epoch))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(SPLIT_SIZES["train"]))


@pytest.mark.parametrize("process_count,global_batch_size", [(1, 4), (2, 4), (2, 6), (3, 3)])
def test_eval_visits_every_example_once_over_processes(mock_mnist, process_count,
                                                        global_batch_size):
  per_process = all_eval_batches(global_batch_size, process_count)
  local = global_batch_size // process_count
  # The largest part of the 11 examples sets the count for every process.
  expected_batches = math.ceil(math.ceil(SPLIT_SIZES["test"] / process_count) / local)
  visited = []
  for batches in per_process:
    assert len(batches) == expected_batches
    masks = np.concatenate([batch["mask"] for batch in batches])
    images = np.concatenate([batch["image"] for batch in batches])
    labels = np.concatenate([batch["label"] for batch in batches])
    real = int(masks.sum())
    # Real examples first, then only padding: zeros with mask False.
    assert masks[:real].all() and not masks[real:].any()
    assert not images[real:].any() and not labels[real:].any()
    visited.extend(ids_of(images[:real]))
  offset = SPLIT_OFFSETS["test"]
  # Concatenated in process order, the parts are the split in order: each example once.
  assert visited == list(range(offset, offset + SPLIT_SIZES["test"]))


def test_resumed_iterator_yields_the_batches_of_an_uninterrupted_one(mock_mnist):
  def batches(seed, start_step=0, count=12):
    # 3 rows per step over 10 examples per process: batches straddle epoch boundaries.
    return take(pipeline.train_batches("mnist", "train", 6, seed=seed,
                                       preprocess=mnist.mnist_preprocess(),
                                       start_step=start_step, process_index=1,
                                       process_count=2), count)

  uninterrupted = batches(seed=0)
  for start_step in (1, 3, 4, 7, 10):
    resumed = batches(seed=0, start_step=start_step, count=12 - start_step)
    for step, batch in enumerate(resumed, start_step):
      for key in ("image", "label"):
        np.testing.assert_array_equal(batch[key], uninterrupted[step][key],
                                      err_msg=f"start_step {start_step}, step {step}")

  def order(seed):
    return ids_of(np.concatenate([batch["image"] for batch in batches(seed, count=8)]))

  assert order(0) == ids_of(np.concatenate([batch["image"] for batch in uninterrupted[:8]]))
  assert order(1) != order(0)


def test_every_epoch_reads_the_shards_in_a_fresh_order(mock_mnist):
  # A buffer of 1 shuffles nothing, so each epoch is the 4 shards of 5 (tests/mnist_mock.py)
  # one after another, each in its file order: a batch of 5 is one shard.
  batches = take(pipeline.train_batches("mnist", "train", 5, seed=0,
                                        preprocess=mnist.mnist_preprocess(),
                                        shuffle_buffer_size=1), 4 * 8)
  shards = []
  for batch in batches:
    ids = ids_of(batch["image"])
    assert ids == list(range(ids[0], ids[0] + 5)) and ids[0] % 5 == 0, ids
    shards.append(ids[0] // 5)
  epochs = [tuple(shards[i:i + 4]) for i in range(0, len(shards), 4)]
  assert all(sorted(epoch) == [0, 1, 2, 3] for epoch in epochs), epochs
  assert len(set(epochs)) > 1, f"every epoch read the shards in the order {epochs[0]}"


def _counted_shards(count, size, reads):
  """`count` shards of `size` consecutive integers; `reads` gets every integer read."""
  def record(value):
    reads.append(int(value))
    return value

  def read(j):
    return tf.data.Dataset.range(j * size, (j + 1) * size).map(
        lambda value: tf.py_function(record, [value], tf.int64))
  return pipeline.Shards(np.full(count, size, np.int64), read)


def test_a_resume_reads_the_window_it_starts_in_and_nothing_before():
  # 20 shards of 50 in windows of 2 (a buffer of 100): a resume in the middle of a window
  # reads that window alone, where it used to read the epoch up to its start and a buffer.
  def stream(first, count, reads):
    examples = pipeline.shuffled_stream(_counted_shards(20, 50, reads), seed=3, first=first,
                                        shuffle_buffer_size=100)
    return [int(x) for x in examples.take(count).as_numpy_iterator()]

  uninterrupted = stream(0, 3000, [])
  assert sorted(uninterrupted[:1000]) == list(range(1000))  # Epoch 0: every example once.
  assert uninterrupted[1000:2000] != uninterrupted[:1000]
  for first in (525, 1000 + 310, 2000 + 999):
    reads = []
    assert stream(first, 1, reads) == [uninterrupted[first]]
    assert len(reads) <= 100, (first, len(reads))
    # What it read is the shards of that window in that epoch's order.
    assert set(reads) == set(uninterrupted[first - first % 100:][:100]), first


def test_dataset_that_is_not_prepared_raises_a_one_line_error(tmp_path):
  data_dir = str(tmp_path / "empty")
  calls = [
      lambda: pipeline.num_examples("mnist", "train", data_dir=data_dir),
      lambda: pipeline.train_batches("mnist", "train", 4, 0, mnist.mnist_preprocess(),
                                     data_dir=data_dir),
      lambda: pipeline.eval_batches("mnist", "test", 4, mnist.mnist_preprocess(),
                                    data_dir=data_dir),
  ]
  for call in calls:
    with pytest.raises(DatasetError) as error:
      call()
    message = str(error.value)
    assert "\n" not in message
    assert "'mnist'" in message and data_dir in message and "tfds build mnist" in message
