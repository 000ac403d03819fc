"""TFDS (or an image folder) -> tf.data -> host-local numpy batches, one part per process.

Each process reads only its own part of a split (`tfds.even_splits`) and yields its
`global_batch_size // process_count` rows of every global batch as numpy; the trainer turns
them into global device arrays with `bigbigan.sharding.to_global_batch`. Images stay uint8 all
the way to the device (a quarter of the bytes of float32) and are normalised there.

Training batches are a pure function of (dataset, split, seed, step): the stream of examples
is a concatenation of epochs. Each epoch reads the split's shards (TFDS's files, or blocks
of a folder's files) in an order drawn from (seed, epoch), a window of consecutive shards
at a time (`shuffle_buffer_size` examples or so), each window shuffled with a seed drawn
from (seed, epoch, window). So every epoch is a fresh order across files, not only within
a shuffle buffer, and a run resumed at `start_step` sees exactly the batches an
uninterrupted one would, reading one window (not the epoch) to get there.

Evaluation batches visit every example of a split exactly once over all processes; every
process yields the same number of batches (the count comes from the split sizes in the
dataset's metadata, so no communication is needed), padded with zeros and carrying a boolean
`mask` that is True for real examples.

Images are decoded late: a TFDS image feature stored encoded (JPEG, PNG) is read as its
bytes (`tfds.decode.SkipDecoding`), so the shuffle buffer holds compressed images (ImageNet:
about 110 KB each, not the 500 KB of a decoded one), skipping to a resumed run's step decodes
nothing, and `preprocess` decodes each image once, after both, where data/images.py decodes
only a JPEG's crop window. Datasets stored as raw tensors arrive decoded; `preprocess`
takes either. "folder:PATH" datasets (data/folder.py) are read through the same code: their
shuffle buffer holds file paths, and a file is read in the parallel map, just before it is
decoded; a file that does not read or decode is skipped and counted in the log.

TensorFlow only runs the input pipeline, on the CPU: the iterators hide GPUs and TPUs from
it so that it does not take accelerator memory from JAX.
"""

import dataclasses
import math
from typing import Callable, Iterator

from absl import logging
import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from bigbigan.data import folder
from bigbigan.errors import ConfigError, DatasetError

Example = dict[str, tf.Tensor]
Preprocess = Callable[[Example], Example]

MASK_KEY = "mask"
STREAM_INDEX_KEY = "stream_index"  # Added to training examples before `preprocess`.
# Datasets whose files must be downloaded by hand before `tfds build`.
MANUAL_DOWNLOADS = {
    "imagenet2012": "put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (image-net.org)",
}
# Examples in the shuffle buffer; MNIST's 60,000 images mix well with 10,000. The buffer
# holds images encoded (ImageNet: ~1.1 GB for 10,000; decoded they would take ~5 GB) or, for
# an image folder, file paths.
DEFAULT_SHUFFLE_BUFFER_SIZE = 10_000


# ---------------------------------------------------------------------------------------
# Datasets and processes.


def hide_accelerators_from_tensorflow() -> None:
  """Makes TensorFlow use the CPU only, leaving GPUs and TPUs to JAX.

  Idempotent; once TensorFlow has initialised its devices (e.g. clu's writers ran first)
  the visible devices can no longer change, and whatever TensorFlow already set up stays.
  """
  for device_type in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], device_type)
    except (RuntimeError, ValueError):
      pass


def prepared_builder(dataset: str, data_dir: str | None = None
                     ) -> tfds.core.DatasetBuilder | folder.FolderDataset:
  """The TFDS builder of `dataset`, checked to be prepared on disk; never downloads.

  Args:
    dataset: a TFDS name, e.g. "mnist" or "mnist:3.0.1"; or "folder:PATH" for a directory
      of images (data/folder.py), whose `FolderDataset` reads as a builder does.
    data_dir: where prepared datasets are; None or "" for TFDS's default (`TFDS_DATA_DIR`
      if set, else ~/tensorflow_datasets). Unused for a folder.

  Returns:
    The builder, whose `info.splits` holds the split sizes.

  Raises:
    DatasetError: the dataset is unknown or not prepared in the data_dir, with a one-line
      message that says how to prepare it.
    ConfigError: a folder that is missing, empty or laid out wrongly.
  """
  if folder.is_folder(dataset):
    return folder.open_folder(dataset)
  try:
    # "" (a config's default) and None alike: TFDS's default, or $TFDS_DATA_DIR.
    builder = tfds.builder(dataset, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as error:
    where = data_dir or tfds.core.constants.get_default_data_dir()
    # TFDS's message runs over several lines (close matches, search paths); keep the first.
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise DatasetError(f"dataset '{dataset}' is unknown to TFDS and not prepared in {where}: "
                       f"{reason}") from error
  # `is_prepared` checks for the metadata files (dataset_info.json, features.json) that
  # `tfds build` writes last; the split sizes the iterators need come from them too.
  if not builder.is_prepared():
    root = builder.data_dir_root
    family = dataset.split(":")[0].split("/")[0]
    if family in MANUAL_DOWNLOADS:
      raise DatasetError(
          f"dataset '{dataset}' is not prepared in {root} and TFDS cannot download it: "
          f"{MANUAL_DOWNLOADS[family]} in {root}/downloads/manual (TFDS's manual_dir), then "
          f"run `tfds build {dataset} --data_dir={root}`")
    raise DatasetError(
        f"dataset '{dataset}' is not prepared in {root}: run `tfds build {dataset} "
        f"--data_dir={root}` on a machine with network access, or set TFDS_DATA_DIR "
        f"(or config.data_dir) to where it is")
  return builder


def num_examples(dataset: str, split: str, data_dir: str | None = None) -> int:
  """The number of examples in `split` (slices such as "train[:50000]" allowed).

  Args:
    dataset: a TFDS name.
    split: a TFDS split string.
    data_dir: where prepared datasets are; None for TFDS's default.

  Returns:
    The split's size according to the dataset's metadata.
  """
  return prepared_builder(dataset, data_dir).info.splits[split].num_examples


# TFDS's own separator of the parts of "train[:10%]+test".
def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ConfigError(f"process_index {process_index} is not in [0, {process_count})")
  return process_index, process_count


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size < process_count or global_batch_size % process_count:
    raise ConfigError(f"batch_size {global_batch_size} does not divide over {process_count} "
                      f"processes: use a positive multiple of {process_count}")
  return global_batch_size // process_count


def _options() -> tf.data.Options:
  options = tf.data.Options()
  # Parallel map and interleave keep their input order: batches are a function of the seed.
  options.deterministic = True
  return options


def late_decoders(builder) -> dict | None:
  """`as_dataset`'s decoders: the image's bytes where the dataset stores it encoded (a
  uint8 `tfds.features.Image`), for `preprocess` to decode; None to read as stored."""
  if isinstance(builder, folder.FolderDataset):
    return None  # Its examples are file paths until `load`.
  features = builder.info.features
  image = features["image"] if "image" in features else None
  if isinstance(image, tfds.features.Image) and image.np_dtype == np.uint8:
    return {"image": tfds.decode.SkipDecoding()}
  return None


def _read(builder, split, **kwargs) -> tuple[tf.data.Dataset, Callable[[Example], Example]]:
  """The split's examples as stored (image bytes, or a folder's file paths), and the
  function that makes an example of one for `preprocess` (a folder reads its file)."""
  examples = builder.as_dataset(split=split, decoders=late_decoders(builder), **kwargs)
  if isinstance(builder, folder.FolderDataset):
    return examples, builder.load
  return examples, lambda example: example


# ---------------------------------------------------------------------------------------
# Training and evaluation iterators.


def train_batches(dataset: str, split: str, global_batch_size: int, seed: int,
                  preprocess: Preprocess, data_dir: str | None = None, start_step: int = 0,
                  process_index: int | None = None, process_count: int | None = None, *,
                  shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER_SIZE
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Yields this process's rows of the training batch of every step from `start_step` on.

  The process's part of the split is repeated forever, each epoch in a fresh order drawn
  from (seed, epoch); batches run across epoch boundaries (`drop_remainder` only ever
  applies to the infinite stream, so no example is dropped at the end of an epoch).

  Args:
    dataset: a TFDS name, e.g. "mnist", or "folder:PATH" (data/folder.py).
    split: a TFDS split string, e.g. "train" or "train[:50000]".
    global_batch_size: rows of the global batch; a multiple of the process count.
    seed: the data seed; the same seed gives the same batches.
    preprocess: maps one TFDS example (a dict of tensors, its image encoded where the
      dataset stores it so (`late_decoders`), plus its int64 position in the training
      stream of all processes under STREAM_INDEX_KEY, to seed augmentations) to a dict of
      fixed-shape tensors, e.g. `data.mnist.mnist_preprocess()`; it runs inside tf.data.
    data_dir: where prepared datasets are; None for TFDS's default (`TFDS_DATA_DIR`).
    start_step: the first step to yield; a resumed run passes its restored step.
    process_index: this process; defaults to `jax.process_index()`.
    process_count: the number of processes; defaults to `jax.process_count()`.
    shuffle_buffer_size: examples in the shuffle buffer.

  Returns:
    An infinite iterator of dicts of numpy arrays with `global_batch_size // process_count`
    rows each.
  """
  hide_accelerators_from_tensorflow()
  process_index, process_count = _processes(process_index, process_count)
  local_batch_size = _local_batch_size(global_batch_size, process_count)
  builder = prepared_builder(dataset, data_dir)
  is_folder = isinstance(builder, folder.FolderDataset)
  # drop_remainder: every process gets the same number of examples per epoch.
  process_split = tfds.even_splits(split, n=process_count, drop_remainder=True)[process_index]
  if builder.info.splits[process_split].num_examples == 0:
    raise ConfigError(f"split '{split}' of '{dataset}' has too few examples to give each of "
                      f"{process_count} processes one")
  if is_folder:
    builder.check_decodes(process_split)

  first = start_step * local_batch_size  # This process's examples before `start_step`.
  examples = shuffled_stream(training_shards(builder, process_split), seed, first,
                             shuffle_buffer_size)
  # Reading a folder's file, like decoding, comes after the shuffle and the resume's skip.
  load = builder.load if is_folder else lambda example: example

  # Each example's place in the stream of all processes, STREAM_INDEX_KEY, seeds its random
  # augmentations (data/images.py): a resumed run draws the same ones.

  def prepared(index: tf.Tensor, example: Example) -> Example:
    stream_index = index * process_count + process_index
    features = preprocess({**load(example), STREAM_INDEX_KEY: stream_index})
    # A folder's examples keep their index past `ignore_errors`, to count what it drops.
    return {**features, STREAM_INDEX_KEY: stream_index} if is_folder else features

  ds = examples.enumerate(start=first).map(prepared, num_parallel_calls=tf.data.AUTOTUNE)
  if is_folder:
    ds = ds.ignore_errors()  # Files that do not read or decode (data/folder.py).
  ds = ds.batch(local_batch_size, drop_remainder=True)
  ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
  if is_folder:
    return _counting_skipped_training(ds.as_numpy_iterator(), dataset, process_count,
                                      first * process_count + process_index)
  return ds.as_numpy_iterator()


# ---------------------------------------------------------------------------------------
# The training stream: shards in a fresh order every epoch, shuffled a window at a time.

# A folder's training shard: this many consecutive files of its (sorted) listing.
FOLDER_SHARD_FILES = 1024
_RNG = "philox"  # TensorFlow's stateless random ops, named so no device picks another.


@dataclasses.dataclass(frozen=True)
class Shards:
  """A split's examples as shards, each read whole and in its own order: `read(j)` (j a
  scalar int64 tensor) gives shard j's `sizes[j]` examples as stored."""
  sizes: np.ndarray
  read: Callable[[tf.Tensor], tf.data.Dataset]


def training_shards(builder, split) -> Shards:
  """`split`'s shards: TFDS's files (the file instructions `as_dataset` reads, a slice's
  part of each), or blocks of FOLDER_SHARD_FILES files of a folder.

  Raises:
    DatasetError: a TFDS dataset prepared in another file format than TFRecord.
  """
  if isinstance(builder, folder.FolderDataset):
    paths, labels = builder.files(split)
    paths, labels = tf.constant(paths.astype(str), tf.string), tf.constant(labels)
    sizes = np.diff(np.minimum(np.arange(0, len(labels) + FOLDER_SHARD_FILES,
                                         FOLDER_SHARD_FILES), len(labels)))

    def read_files(j: tf.Tensor) -> tf.data.Dataset:
      block = slice(j * FOLDER_SHARD_FILES, (j + 1) * FOLDER_SHARD_FILES)
      return tf.data.Dataset.from_tensor_slices({folder.PATH_KEY: paths[block],
                                                 "label": labels[block]})
    return Shards(sizes[sizes > 0], read_files)

  file_format = builder.info.file_format
  if file_format not in (None, tfds.core.FileFormat.TFRECORD):
    raise DatasetError(
        f"dataset '{builder.info.full_name}' is prepared as {file_format.value}: training "
        f"reads TFRecord shards; prepare it again with `tfds build {builder.info.name} "
        "--file_format=tfrecord`")
  instructions = builder.info.splits[split].file_instructions
  files = tf.constant([i.filename for i in instructions], tf.string)
  skips = tf.constant([i.skip for i in instructions], tf.int64)
  takes = tf.constant([i.take for i in instructions], tf.int64)
  features, decoders = builder.info.features, late_decoders(builder)

  def read_records(j: tf.Tensor) -> tf.data.Dataset:
    records = tf.data.TFRecordDataset(files[j]).skip(skips[j]).take(takes[j])
    return records.map(lambda record: features.deserialize_example(record, decoders=decoders))
  return Shards(np.array([i.take for i in instructions], np.int64), read_records)


def shuffled_stream(shards: Shards, seed: int, first: int, shuffle_buffer_size: int
                    ) -> tf.data.Dataset:
  """The endless stream of `shards`' examples from its `first` on: epoch after epoch, each
  reading the shards in an order drawn from (seed, epoch), a window of consecutive shards
  at a time (about `shuffle_buffer_size` examples), each window shuffled by a buffer of
  that size with a seed drawn from (seed, epoch, window).

  A function of (seed, position) alone, so a resumed stream (`first` > 0) is the tail of an
  uninterrupted one; to get there it reads the window it starts in, up to `first` and a
  buffer past it, and nothing before (no earlier shard, no earlier epoch).
  """
  count = len(shards.sizes)
  per_window = max(1, round(shuffle_buffer_size / float(np.mean(shards.sizes))))
  windows = -(-count // per_window)
  key = tf.constant([seed, 0], tf.int64)

  def epoch_key(epoch) -> tf.Tensor:
    # int64 whether `epoch` comes from a Dataset.range or from Python: the fold-in's value
    # depends on the type of what it folds in.
    return tf.random.experimental.stateless_fold_in(key, tf.cast(epoch, tf.int64), alg=_RNG)

  def order(epoch) -> tf.Tensor:
    return tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64),
                                                    seed=epoch_key(epoch), alg=_RNG)

  def window(epoch, index) -> tf.data.Dataset:
    members = order(epoch)[index * per_window:(index + 1) * per_window]
    window_seed = tf.random.stateless_uniform(
        [], seed=tf.random.experimental.stateless_fold_in(epoch_key(epoch), index, alg=_RNG),
        minval=None, maxval=None, dtype=tf.int64, alg=_RNG)
    return (tf.data.Dataset.from_tensor_slices(members).flat_map(shards.read)
            .shuffle(shuffle_buffer_size, seed=window_seed, reshuffle_each_iteration=False))

  def epoch_examples(epoch, first_window=0) -> tf.data.Dataset:
    return tf.data.Dataset.range(first_window, windows).flat_map(
        lambda index: window(epoch, index))

  # The window the stream starts in, from the sizes of the epoch's shards in its order.
  epoch, into_epoch = divmod(first, int(np.sum(shards.sizes)))
  ends = np.cumsum(np.add.reduceat(shards.sizes[order(epoch).numpy()],
                                   np.arange(0, count, per_window)))
  start_window = int(np.searchsorted(ends, into_epoch, side="right"))
  into_window = into_epoch - (int(ends[start_window - 1]) if start_window else 0)
  later_epochs = tf.data.Dataset.range(epoch + 1, np.iinfo(np.int64).max).flat_map(
      epoch_examples)
  return epoch_examples(epoch, start_window).skip(into_window).concatenate(later_epochs)


def _counting_skipped_training(batches: Iterator[dict[str, np.ndarray]], dataset: str,
                               process_count: int, first_index: int
                               ) -> Iterator[dict[str, np.ndarray]]:
  """The batches without their stream indices, logging the examples skipped before each
  (consecutive examples of a process are `process_count` apart in the stream)."""
  next_index, skipped = first_index, 0
  for batch in batches:
    indices = batch.pop(STREAM_INDEX_KEY)
    missing = int(indices[-1] - next_index) // process_count + 1 - len(indices)
    next_index = int(indices[-1]) + process_count
    if missing:
      skipped += missing
      logging.warning(
          "%s: skipped %d image file(s) that do not read or decode (%d so far in this "
          "process's training stream); later batches differ from a run that started before "
          "them by as many examples. Delete or fix the files to keep resumption exact.",
          dataset, missing, skipped)
    yield batch


def eval_batch_count(split_sizes: list[int], local_batch_size: int) -> int:
  """Batches every process yields: enough for the largest part of the split."""
  return max(1, math.ceil(max(split_sizes) / local_batch_size))


def eval_batches(dataset: str, split: str, global_batch_size: int, preprocess: Preprocess,
                 data_dir: str | None = None, process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Yields this process's rows of evaluation batches that cover `split` exactly once.

  Processes read consecutive parts of the split (`tfds.even_splits`; sizes may differ by
  one) in file order. Every process yields the same number of batches, so collectives in
  the evaluation step line up; the rows past a process's last example are zeros, and
  `mask` is False for them.

  Args:
    dataset: a TFDS name, e.g. "mnist", or "folder:PATH" (data/folder.py).
    split: a TFDS split string, e.g. "test".
    global_batch_size: rows of the global batch; a multiple of the process count.
    preprocess: maps one TFDS example (its image encoded where the dataset stores it so) to
      a dict of fixed-shape numeric tensors (the padding rows are built from their shapes
      and dtypes); must not return a "mask" key.
    data_dir: where prepared datasets are; None for TFDS's default (`TFDS_DATA_DIR`).
    process_index: this process; defaults to `jax.process_index()`.
    process_count: the number of processes; defaults to `jax.process_count()`.

  Returns:
    A finite iterator of dicts of numpy arrays with `global_batch_size // process_count`
    rows each, including the boolean "mask".
  """
  hide_accelerators_from_tensorflow()
  process_index, process_count = _processes(process_index, process_count)
  local_batch_size = _local_batch_size(global_batch_size, process_count)
  builder = prepared_builder(dataset, data_dir)
  is_folder = isinstance(builder, folder.FolderDataset)
  process_splits = tfds.even_splits(split, n=process_count)
  sizes = [builder.info.splits[part].num_examples for part in process_splits]
  num_batches = eval_batch_count(sizes, local_batch_size)

  read_config = tfds.ReadConfig(options=_options())
  ds, load = _read(builder, process_splits[process_index], shuffle_files=False,
                   read_config=read_config)

  def with_mask(example: Example) -> Example:
    features = preprocess(load(example))
    if MASK_KEY in features:
      raise ValueError(f"preprocess must not return a '{MASK_KEY}' feature: eval_batches adds it")
    return {**features, MASK_KEY: tf.constant(True)}

  ds = ds.map(with_mask, num_parallel_calls=tf.data.AUTOTUNE)
  if is_folder:
    ds = ds.ignore_errors()  # Files that do not read or decode (data/folder.py).
  padding_example = tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype),
                                          ds.element_spec)  # Zeros, and mask False.
  # Padded up to the count every process yields, however many examples were skipped.
  total = num_batches * local_batch_size
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding_example).repeat()).take(total)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
  if is_folder:
    return _counting_skipped_evaluation(ds.as_numpy_iterator(), dataset, split,
                                        sizes[process_index])
  return ds.as_numpy_iterator()


def _counting_skipped_evaluation(batches: Iterator[dict[str, np.ndarray]], dataset: str,
                                 split: str, size: int) -> Iterator[dict[str, np.ndarray]]:
  """The batches, logging at their end how many of this process's `size` examples were
  skipped."""
  real = 0
  for batch in batches:
    real += int(batch[MASK_KEY].sum())
    yield batch
  if real < size:
    logging.warning("%s: evaluation of split '%s' skipped %d of this process's %d image "
                    "files, which do not read or decode", dataset, split, size - real, size)
