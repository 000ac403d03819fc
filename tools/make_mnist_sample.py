"""Writes the MNIST sample that ships with the package (bigbigan/data/mnist_sample/).

    python tools/make_mnist_sample.py --tfds_dir=/path/to/tfds

It reads MNIST as TFDS prepared it (`tfds build mnist`) and writes the first
`--train` training and `--test` test examples of each split, unchanged (the same
serialized records, the digits PNG-encoded), as a TFDS dataset directory of its own:
`mnist/<version>/` with the same features and a dataset_info.json whose splits describe
the sample. `tfds.builder("mnist", data_dir=<that directory>)` then reads it like any
prepared dataset, which is how `configs/quickstart.py` trains offline.

MNIST is by Yann LeCun and Corinna Cortes, distributed under CC BY-SA 3.0; the sample keeps
that license (bigbigan/data/mnist_sample/README.md).
"""

import argparse
import json
import os
import shutil

import tensorflow as tf

SPLIT_FILE = "{name}-{split}.tfrecord-00000-of-00001"


def _copy_records(source: str, destination: str, count: int) -> tuple[int, int]:
  """Copies the first `count` records; returns (records, bytes written)."""
  written = size = 0
  with tf.io.TFRecordWriter(destination) as writer:
    for record in tf.data.TFRecordDataset(source).take(count):
      writer.write(record.numpy())
      written += 1
  size = os.path.getsize(destination)
  if written != count:
    raise SystemExit(f"{source} holds {written} records, fewer than {count}")
  return written, size


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tfds_dir", required=True, help="TFDS data_dir with mnist prepared.")
  parser.add_argument("--version", default="3.0.1", help="The prepared mnist version.")
  parser.add_argument("--train", type=int, default=6000, help="Training examples to keep.")
  parser.add_argument("--test", type=int, default=1000, help="Test examples to keep.")
  parser.add_argument("--out", default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "..", "bigbigan", "data", "mnist_sample"))
  args = parser.parse_args()

  source = os.path.join(args.tfds_dir, "mnist", args.version)
  target = os.path.join(args.out, "mnist", args.version)
  shutil.rmtree(target, ignore_errors=True)
  os.makedirs(target)
  shutil.copy(os.path.join(source, "features.json"), target)
  with open(os.path.join(source, "dataset_info.json")) as f:
    info = json.load(f)
  for split in info["splits"]:
    count = {"train": args.train, "test": args.test}[split["name"]]
    file = SPLIT_FILE.format(name="mnist", split=split["name"])
    records, size = _copy_records(os.path.join(source, file), os.path.join(target, file),
                                  count)
    split["shardLengths"], split["numBytes"] = [str(records)], str(size)
    print(f"{split['name']}: {records} examples, {size:,} bytes")
  info["description"] = (f"{info['description']} This copy holds the first {args.train} "
                         f"training and {args.test} test examples.")
  with open(os.path.join(target, "dataset_info.json"), "w") as f:
    json.dump(info, f, indent=2)
    f.write("\n")


if __name__ == "__main__":
  main()
