"""Records a training stream reads before its first batch, from the start of a run and from
a resume in the middle of an epoch, on a TFDS dataset sharded as ImageNet is (many TFRecord
files of a thousand-odd examples each; ImageNet's train split is 1,024 of about 1,250).

    python benchmarks/resume_reads.py [--shards=256 --shard_examples=250 \
        --shuffle_buffer_size=2000 --batch_size=256]

Writes a synthetic MNIST-shaped dataset of `shards` x `shard_examples` random 28x28 PNGs to a
temporary TFDS data_dir, then for each start builds `pipeline.train_batches` and takes one
batch. Records read = the bytes this process read meanwhile (`rchar` of /proc/self/io)
over the mean bytes of a record; reads go through buffers of 256 KB, so the figure is
good to a few hundred records. Prints one row per start.
"""

import argparse
import os
import pathlib
import tempfile
import time

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from bigbigan.data import mnist, pipeline


def write_dataset(data_dir: str, shards: int, shard_examples: int) -> float:
  """A prepared "mnist" of `shards` train shards of random digits; returns the mean bytes
  of a record."""
  builder = tfds.builder("mnist", data_dir=data_dir)
  template = tfds.core.ShardedFileTemplate(
      data_dir=builder.data_path, template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
      dataset_name="mnist", split="train", filetype_suffix="tfrecord")
  builder.data_path.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for shard in range(shards):
    path = template.sharded_filepath(shard_index=shard, num_shards=shards)
    with tf.io.TFRecordWriter(str(path)) as writer:
      for _ in range(shard_examples):
        writer.write(builder.info.features.serialize_example(
            {"image": rng.integers(0, 256, (28, 28, 1), np.uint8), "label": 0}))
  builder.info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(
      name="train", shard_lengths=[shard_examples] * shards, num_bytes=0,
      filename_template=template)]))
  builder.info.write_to_directory(builder.data_path)
  total = sum(os.path.getsize(path) for path in builder.data_path.glob("*.tfrecord-*"))
  return total / (shards * shard_examples)


def bytes_read() -> int:
  for line in pathlib.Path("/proc/self/io").read_text().splitlines():
    if line.startswith("rchar:"):
      return int(line.split()[1])
  raise RuntimeError("/proc/self/io has no rchar")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shards", type=int, default=256)
  parser.add_argument("--shard_examples", type=int, default=250)
  parser.add_argument("--shuffle_buffer_size", type=int, default=2000)
  parser.add_argument("--batch_size", type=int, default=256)
  args = parser.parse_args()
  epoch = args.shards * args.shard_examples
  with tempfile.TemporaryDirectory() as data_dir:
    record_bytes = write_dataset(data_dir, args.shards, args.shard_examples)
    print(f"{args.shards} shards x {args.shard_examples} examples ({record_bytes:.0f} B a "
          f"record), shuffle buffer {args.shuffle_buffer_size}, batch {args.batch_size}")
    print(f"{'start step':>10} {'into epoch':>10} {'records read':>12} {'seconds':>8}")
    for start_step in (0, epoch // 2 // args.batch_size, 3 * epoch // args.batch_size + 7):
      before, started = bytes_read(), time.perf_counter()
      batches = pipeline.train_batches(
          "mnist", "train", args.batch_size, seed=0, preprocess=mnist.mnist_preprocess(),
          data_dir=data_dir, start_step=start_step, process_index=0, process_count=1,
          shuffle_buffer_size=args.shuffle_buffer_size)
      next(batches)
      records = (bytes_read() - before) / record_bytes
      print(f"{start_step:>10} {start_step * args.batch_size % epoch:>10} {records:>12.0f} "
            f"{time.perf_counter() - started:>8.2f}")


if __name__ == "__main__":
  main()
