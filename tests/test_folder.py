"""Training on a folder of images ("folder:PATH", bigbigan/data/folder.py): generated folders
of tiny JPEG and PNG files in class subfolders, read through the same pipeline as TFDS
datasets. An example is identified by a hash of its file's bytes (the identification
preprocess hands it through instead of pixels)."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import mnist_mock
from bigbigan import train
from bigbigan.data import folder, images, pipeline
from bigbigan.data.splits import validate_splits
from bigbigan.errors import ConfigError, DatasetError
from conftest import REPO

SIZE = (24, 32)  # Height and width of the generated images.


def write_images(directory, classes, seed=0):
  """Writes {class name ("" for none): count} random images, JPEG and PNG in turn; returns
  {path: class name}."""
  rng = np.random.default_rng(seed)
  written = {}
  for name, count in classes.items():
    directory_of_class = os.path.join(directory, name) if name else str(directory)
    os.makedirs(directory_of_class, exist_ok=True)
    for i in range(count):
      pixels = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
      png = i % 2 == 1
      data = tf.io.encode_png(pixels) if png else tf.io.encode_jpeg(pixels, quality=95)
      path = os.path.join(directory_of_class, f"{seed}_{i:03d}.{'png' if png else 'JPG'}")
      with open(path, "wb") as f:
        f.write(data.numpy())
      written[path] = name
  return written


def file_id(path) -> int:
  with open(path, "rb") as f:
    return int(tf.strings.to_hash_bucket_fast(f.read(), 2**62))


def identify(example):
  """A preprocess that keeps the file's identity and label (no decoding)."""
  return {"id": tf.strings.to_hash_bucket_fast(example["image"], 2**62),
          "label": tf.cast(example["label"], tf.int32)}


def ids(batches):
  return [int(i) for batch in batches for i in batch["id"]]


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


@pytest.fixture
def labelled(tmp_path):
  """A folder with train/ (cats 10, dogs 10) and validation/ (cats 2, dogs 3)."""
  root = tmp_path / "photos"
  train_files = write_images(root / "train", {"cats": 10, "dogs": 10})
  validation_files = write_images(root / "validation", {"cats": 2, "dogs": 3}, seed=1)
  return f"folder:{root}", train_files, validation_files


def test_batches_labels_and_splits_of_a_folder_with_train_and_validation(labelled):
  dataset, train_files, validation_files = labelled
  label_of = {file_id(path): ["cats", "dogs"].index(name) for path, name in
              {**train_files, **validation_files}.items()}
  # One epoch of 20 examples in 5 batches of 4: each training file once, with its label.
  batches = take(pipeline.train_batches(dataset, "train", 4, seed=0, preprocess=identify,
                                        process_index=0, process_count=1), 5)
  seen = ids(batches)
  assert sorted(seen) == sorted(file_id(path) for path in train_files)
  for batch in batches:
    assert [label_of[int(i)] for i in batch["id"]] == list(batch["label"])
  evaluation = list(pipeline.eval_batches(dataset, "validation", 4, identify,
                                          process_index=0, process_count=1))
  real = [int(i) for batch in evaluation for i, m in zip(batch["id"], batch["mask"]) if m]
  # In path order, each once, padded to 2 batches.
  assert real == [file_id(path) for path in sorted(validation_files)]
  assert len(evaluation) == 2 and sum(int(b["mask"].sum()) for b in evaluation) == 5
  info = pipeline.prepared_builder(dataset).info
  assert info.features["label"].names == ["cats", "dogs"]
  assert pipeline.num_examples(dataset, "train[5:]") == 15
  # The images themselves: uint8 RGB at the resolution, random crops in training.
  preprocess = images.image_preprocess(dataset, 16, train=True)
  batch = next(pipeline.train_batches(dataset, "train", 4, 0, preprocess, process_index=0,
                                      process_count=1))
  assert batch["image"].shape == (4, 16, 16, 3) and batch["image"].dtype == np.uint8
  assert set(batch) == {"image", "label"}


def test_resumed_stream_equals_an_uninterrupted_one(labelled):
  dataset = labelled[0]
  preprocess = images.image_preprocess(dataset, 16, train=True, seed=1)

  def batches(start_step, count):
    # 3 rows per step of 10 examples per process: batches straddle epoch boundaries.
    return take(pipeline.train_batches(dataset, "train", 6, seed=2, preprocess=preprocess,
                                       start_step=start_step, process_index=1,
                                       process_count=2), count)

  uninterrupted = batches(0, 9)
  for start_step in (2, 3, 7):
    for step, batch in enumerate(batches(start_step, 9 - start_step), start_step):
      for key in ("image", "label"):
        np.testing.assert_array_equal(batch[key], uninterrupted[step][key],
                                      err_msg=f"start_step {start_step}, step {step}")


def test_processes_read_disjoint_shares_that_cover_the_split(labelled):
  dataset, train_files, _ = labelled
  shares = []
  for process_index in range(2):
    # 10 examples per process, 2 rows per batch: 5 batches are one epoch.
    epoch = ids(take(pipeline.train_batches(dataset, "train", 4, seed=0, preprocess=identify,
                                            process_index=process_index, process_count=2), 5))
    assert len(set(epoch)) == 10
    shares.append(set(epoch))
  assert not shares[0] & shares[1]
  assert shares[0] | shares[1] == {file_id(path) for path in train_files}


def test_hashed_partition_holds_out_a_stable_fraction(tmp_path):
  root = tmp_path / "flat"
  files = write_images(root, {"": 60})
  dataset = f"folder:{root}?eval_fraction=0.25"

  def split_ids(name, dataset=dataset):
    return {int(i) for batch in pipeline.eval_batches(dataset, name, 4, identify,
                                                      process_index=0, process_count=1)
            for i, m in zip(batch["id"], batch["mask"]) if m}

  train_ids, validation_ids = split_ids("train"), split_ids("validation")
  assert not train_ids & validation_ids
  assert train_ids | validation_ids == {file_id(path) for path in files}
  assert 6 <= len(validation_ids) <= 24  # 15 expected of 60.
  info = pipeline.prepared_builder(dataset).info
  assert "label" not in info.features  # Unlabelled: no classes.
  # Adding files moves none of the others between the splits.
  write_images(root, {"": 20}, seed=5)
  grown = f"folder:{root}/?eval_fraction=0.25"  # Another name: listed afresh.
  assert split_ids("validation", grown) >= validation_ids
  assert not split_ids("train", grown) & validation_ids
  # The default fraction, 2%, of these 80 files.
  assert pipeline.num_examples(f"folder:{root}", "validation") < 8


def test_validate_splits_checks_a_folders_splits(labelled):
  dataset = labelled[0]
  config = mnist_mock.tiny_bigbigan_config(
      dataset=dataset, train_split="train", eval_split="validation",
      probe_train_split="train[8:]", knn_train_split="train[8:]",
      probe_train_val_split="train[:8]", fid_reference_split="validation")
  validate_splits(config)  # Accepted.
  config.eval_split = "test"
  with pytest.raises(ConfigError, match=r"no split 'test'.*train, 20 examples; validation, "
                                        r"5 examples"):
    validate_splits(config)
  config.eval_split, config.knn_train_split = "validation", "train[:10]"
  with pytest.raises(ConfigError, match="share examples 0..7 of split 'train'"):
    validate_splits(config)  # knn_train_split against probe_train_val_split.
  config.knn_train_split = "train[:30]"
  with pytest.raises(ConfigError, match="reaches past the end"):
    validate_splits(config)


def test_missing_empty_and_mixed_folders_are_one_line_errors(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "not_images").mkdir()
  (tmp_path / "not_images" / "notes.txt").write_text("no images")
  write_images(tmp_path / "mixed", {"": 1, "cats": 1})
  write_images(tmp_path / "new_class" / "train", {"cats": 1})
  write_images(tmp_path / "new_class" / "validation", {"lions": 1})
  cases = [("missing", "does not exist"), ("empty", "holds no image"),
           ("not_images", "holds no image"), ("mixed", "both images"),
           ("new_class", "lions")]
  for name, reason in cases:
    with pytest.raises(ConfigError) as error:
      pipeline.prepared_builder(f"folder:{tmp_path / name}")
    message = str(error.value)
    assert "\n" not in message and reason in message and str(tmp_path / name) in message
  with pytest.raises(ConfigError, match="eval_fraction must be a number in"):
    folder.parse(f"folder:{tmp_path}?eval_fraction=1.5")


def test_corrupt_files_are_skipped_and_counted(tmp_path, caplog):
  root = tmp_path / "photos"
  files = write_images(root / "train", {"cats": 4, "dogs": 4})
  write_images(root / "validation", {"cats": 3}, seed=1)
  corrupt = [root / "train" / "cats" / "truncated.jpg", root / "validation" / "cats" / "x.png"]
  good = next(path for path in files if path.endswith(".JPG"))
  with open(good, "rb") as f:
    corrupt[0].write_bytes(f.read()[:200])  # A JPEG cut short.
  corrupt[1].write_bytes(b"not an image")
  dataset = f"folder:{root}"
  preprocess = images.image_preprocess(dataset, 8, train=True)
  assert pipeline.num_examples(dataset, "train") == 9
  caplog.set_level(logging.WARNING)
  # Two epochs of 9 files give 16 images and skip the truncated one twice.
  batches = take(pipeline.train_batches(dataset, "train", 4, 0, preprocess, process_index=0,
                                        process_count=1), 4)
  assert all(batch["image"].shape == (4, 8, 8, 3) for batch in batches)
  skipped = [r.getMessage() for r in caplog.records if "do not read or decode" in r.message]
  assert skipped and "(2 so far" in skipped[-1], skipped
  # Evaluation: the 3 readable files of 4, padded to the batch count of 4 files.
  evaluation = list(pipeline.eval_batches(dataset, "validation", 2,
                                          images.image_preprocess(dataset, 8, train=False),
                                          process_index=0, process_count=1))
  assert len(evaluation) == 2 and sum(int(b["mask"].sum()) for b in evaluation) == 3
  assert any("skipped 1 of this process's 4" in r.getMessage() for r in caplog.records)
  # A split of which no file decodes would skip forever: refused.
  only_corrupt = tmp_path / "only_corrupt"
  only_corrupt.mkdir()
  (only_corrupt / "a.jpg").write_bytes(b"junk")
  with pytest.raises(DatasetError, match="decodes as an image"):
    pipeline.train_batches(f"folder:{only_corrupt}?eval_fraction=0.01", "train", 1, 0,
                           preprocess, process_index=0, process_count=1)


@pytest.mark.slow
def test_main_refuses_a_missing_folder_in_one_line(tmp_path):
  missing = tmp_path / "no_such_folder"
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "bigbigan.main", "--config=configs/bigbigan_base.py:tiny",
       f"--workdir={workdir}", f"--config.dataset=folder:{missing}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 1
  errors = [line for line in result.stderr.splitlines() if line.startswith("bigbigan: error:")]
  assert len(errors) == 1 and str(missing) in errors[0] and "does not exist" in errors[0]
  assert not workdir.exists()


@pytest.mark.slow  # Compiles the tiny BigBiGAN: about 20 s on 2 CPU cores.
def test_tiny_bigbigan_trains_and_evaluates_on_a_folder(labelled, tmp_path):
  dataset = labelled[0]
  config = mnist_mock.tiny_bigbigan_config(
      dataset=dataset, train_split="train", eval_split="validation",
      probe_train_split="train[8:]", knn_train_split="train[8:]",
      probe_train_val_split="train[:8]", fid_reference_split="validation",
      eval_metrics=("knn",), selection_metric="knn_1_train_val_accuracy_cosine")
  workdir = tmp_path / "run"
  state = train.train_and_evaluate(config, str(workdir))
  assert int(state.step) == config.total_steps
  # The folder's classes label the k-NN's images: 5 validation images against 12.
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  accuracies = [r["knn_1_accuracy_cosine_avepool_feat"] for r in records
                if "knn_1_accuracy_cosine_avepool_feat" in r]
  assert accuracies and all(a * 5 == pytest.approx(round(a * 5)) for a in accuracies)
