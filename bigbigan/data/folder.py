"""A directory of JPEG/PNG files as a dataset: `config.dataset = "folder:/path/to/images"`.

    python -m bigbigan.main --config=configs/bigbigan_base.py --workdir=/tmp/run \
        --config.dataset=folder:/data/photos

The path may be local or on an object store (gs://...); it is listed with tf.io.gfile, once
per process (the listing is cached, so a million files on a bucket are listed once, not at
every evaluation). Files ending in .jpg, .jpeg or .png (any case) are images; every other
file is ignored.

Layout and labels:
- Images directly in a directory are unlabelled (label 0; the evaluation's linear probe and
  k-NN need labels and say so).
- Subfolders of a directory are classes: their sorted names are label ids 0, 1, ...; images
  anywhere below a class subfolder belong to it. A directory holding both images and class
  subfolders is refused (which label would its own images have?).

Splits, named as ImageNet's are, so the BigBiGAN configs' split fields (`train`,
`train[10000:]`, `validation` ...) read a folder unchanged where it is large enough:
- With a `train/` subfolder, `train` is its images and `validation` the images of a
  `validation/` (or `eval/`) subfolder beside it, each laid out as above with the same
  classes (the held-out folder may lack some). Other entries of the root are ignored.
- Otherwise (or when `train/` has no held-out folder beside it), a fixed share of the images
  is held out as `validation`: an image is held out when a hash (SHA-256) of its path
  relative to the images' directory falls in the lowest `eval_fraction` of the hash range,
  2% unless the dataset name says otherwise: "folder:/data/photos?eval_fraction=0.1". The
  partition is a function of each file's path alone: adding or removing files never moves
  another file between `train` and `validation`. The fraction is part of the dataset's
  name, not a config field of its own, because every reader of the dataset (the trainer,
  the evaluator, `bigbigan.evaluate`, the FID reference cache's key) is handed the name,
  and must see the same partition.
Within a split, examples are in the order of their paths; TFDS split strings apply as they
do to a TFDS dataset ("train[:10%]", "train[1000:]+validation", `tfds.even_splits` for the
processes' shares), so the pipeline (data/pipeline.py) reads a folder as it reads a TFDS
dataset: each process its own even share, the same resumable per-epoch shuffling and
masked evaluation. Its shuffle buffer holds file paths; a file is read and decoded after
the shuffle (and after a resumed run's skip), in the preprocessing of data/images.py
(framing "random_resized" with flips, as ImageNet).

Unreadable files: an empty or missing folder, or one without images, is refused at start
(ConfigError naming the path). A file that fails to read or decode (truncated, not an image
despite its name) is skipped and counted: the pipeline drops it (`Dataset.ignore_errors`)
and logs a warning with the count. Refusing such files up front would need a full decode
pass over the folder before every run, hours for a million images on a bucket; skipping
costs nothing while the files are sound. What skipping gives up: a skipped file shifts the
batches after it by one example, so a run resumed past a skipped file reads batches that
differ from an uninterrupted run's (the warning says so; delete the files it counts to
make resumption exact again), and evaluation visits every readable image once.
"""

import dataclasses
import functools
import hashlib
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from bigbigan.errors import ConfigError, DatasetError

PREFIX = "folder:"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
DEFAULT_EVAL_FRACTION = 0.02
TRAIN, VALIDATION = "train", "validation"
HELD_OUT_FOLDERS = ("validation", "eval")
PATH_KEY = "path"  # An example's file before it is read (`FolderDataset.load`).
# Files of a split tried by `check_decodes` before the split is declared undecodable.
DECODE_CHECK_FILES = 10
_EVAL_FRACTION = re.compile(r"\?eval_fraction=([^?/]*)$")


def is_folder(dataset: str) -> bool:
  return dataset.startswith(PREFIX)


def parse(dataset: str) -> tuple[str, float]:
  """"folder:PATH[?eval_fraction=F]" -> (PATH without a trailing slash, F).

  Raises:
    ConfigError: no path, or a fraction outside (0, 1).
  """
  spec = dataset[len(PREFIX):]
  fraction = DEFAULT_EVAL_FRACTION
  match = _EVAL_FRACTION.search(spec)
  if match:
    spec = spec[:match.start()]
    try:
      fraction = float(match.group(1))
    except ValueError:
      fraction = float("nan")
    if not 0.0 < fraction < 1.0:
      raise ConfigError(f"config.dataset={dataset!r}: eval_fraction must be a number in "
                        f"(0, 1), e.g. {PREFIX}{spec}?eval_fraction=0.05")
  root = spec.rstrip("/") or spec
  if not root:
    raise ConfigError(f"config.dataset={dataset!r} names no directory: use "
                      f"'{PREFIX}/path/to/images' (local or gs://)")
  return root, fraction


@dataclasses.dataclass(frozen=True)
class FolderInfo:
  """What the pipeline and the evaluation read of a TFDS builder's `info`."""
  name: str
  full_name: str  # The folder, its partition and a digest of its files' list.
  splits: tfds.core.SplitDict
  features: tfds.features.FeaturesDict  # "label" only when the folder has classes.
  class_names: tuple[str, ...]


class FolderDataset:
  """A folder of images with a TFDS builder's reading interface (`prepared_builder`).

  `as_dataset` yields {"path": file, "label": int64} per example; `load` reads the file's
  bytes into "image" (the pipeline calls it after shuffling).
  """

  def __init__(self, dataset: str, root: str,
               files: dict[str, list[tuple[str, int]]], class_names: tuple[str, ...],
               eval_fraction: float):
    self._files = {split: (np.array([path for path, _ in examples], dtype=object),
                           np.array([label for _, label in examples], np.int64))
                   for split, examples in files.items()}
    features = {"image": tfds.features.Image(shape=(None, None, 3))}
    if class_names:
      features["label"] = tfds.features.ClassLabel(names=list(class_names))
    listing = hashlib.sha256("\n".join(
        f"{split} {label} {path}" for split, examples in sorted(files.items())
        for path, label in examples).encode()).hexdigest()
    self.root = root
    self.info = FolderInfo(
        name=dataset, class_names=class_names,
        full_name=(f"{PREFIX}{root} (eval_fraction {eval_fraction}, files sha256 "
                   f"{listing[:16]})"),
        splits=tfds.core.SplitDict([_split_info(root, split, len(examples))
                                    for split, examples in files.items()]),
        features=tfds.features.FeaturesDict(features))
    # A file instruction names its split by a file name (_split_info's template); an empty
    # split has none.
    self._split_of_file = {self.info.splits[split].file_instructions[0].filename: split
                           for split, examples in files.items() if examples}

  def is_prepared(self) -> bool:
    return True

  def file_ranges(self, split) -> list[tuple[str, int, int]]:
    """(split name, start, stop) of the examples a split spec (str, or an even split of
    `tfds.even_splits`) selects, as TFDS resolves its slices."""
    return [(self._split_of_file[instruction.filename], instruction.skip,
             instruction.skip + instruction.take)
            for instruction in self.info.splits[split].file_instructions]

  def files(self, split) -> tuple[np.ndarray, np.ndarray]:
    """The paths (str objects) and int64 labels of `split`'s examples, in order."""
    paths, labels = [], []
    for name, start, stop in self.file_ranges(split):
      paths.append(self._files[name][0][start:stop])
      labels.append(self._files[name][1][start:stop])
    if not paths:  # An empty split.
      return np.array([], dtype=object), np.array([], np.int64)
    return np.concatenate(paths), np.concatenate(labels)

  def as_dataset(self, split, shuffle_files: bool = False,
                 read_config: tfds.ReadConfig | None = None, decoders=None) -> tf.data.Dataset:
    """{"path": tf.string, "label": int64} of `split`'s examples, in order.

    `shuffle_files` and `decoders` are accepted for the TFDS interface and have nothing to
    do here: a split is one list of files (shuffled by the pipeline), read by `load`.
    """
    del shuffle_files, decoders
    paths, labels = self.files(split)
    ds = tf.data.Dataset.from_tensor_slices(
        {PATH_KEY: tf.constant(paths.astype(str), tf.string), "label": labels})
    if read_config is not None and read_config.options is not None:
      ds = ds.with_options(read_config.options)
    return ds

  @staticmethod
  def load(example: dict) -> dict:
    """An `as_dataset` example with its file's bytes as "image" (decoded by preprocess)."""
    example = dict(example)
    return {**example, "image": tf.io.read_file(example.pop(PATH_KEY))}

  def check_decodes(self, split) -> None:
    """Raises DatasetError unless one of the first DECODE_CHECK_FILES files of `split`
    decodes (a training stream of files that all fail would skip them forever)."""
    paths, _ = self.files(split)
    for path in paths[:DECODE_CHECK_FILES]:
      try:
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return
      except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
              tf.errors.PermissionDeniedError, tf.errors.DataLossError):
        continue
    raise DatasetError(f"none of the first {min(len(paths), DECODE_CHECK_FILES)} files of "
                       f"split '{split}' of {self.info.name} decodes as an image (e.g. "
                       f"{paths[0]}): the folder should hold JPEG or PNG files")


def _split_info(root: str, split: str, size: int) -> tfds.core.SplitInfo:
  # One "shard" per split: TFDS's slicing then gives (skip, take) into the split's list.
  return tfds.core.SplitInfo(
      name=split, shard_lengths=[size], num_bytes=0,
      filename_template=tfds.core.ShardedFileTemplate(
          data_dir=epath.Path(root), template="{SPLIT}", dataset_name="folder", split=split,
          filetype_suffix="files"))


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS)


def _join(directory: str, name: str) -> str:
  return f"{directory}/{name}" if not directory.endswith("/") else directory + name


def _entries(directory: str) -> tuple[list[str], list[str]]:
  """(sorted subfolder names, sorted image file names) directly in `directory`.

  Names with an image extension are taken for files without asking the file system: a
  stat per file would cost a round trip each on an object store.
  """
  folders, images = [], []
  for entry in tf.io.gfile.listdir(directory):
    name = entry.rstrip("/")
    if entry.endswith("/"):  # Object stores mark their directories so.
      folders.append(name)
    elif _is_image(name):
      images.append(name)
    elif tf.io.gfile.isdir(_join(directory, name)):
      folders.append(name)
  return sorted(folders), sorted(images)


def _images_below(directory: str) -> list[str]:
  """The image files anywhere below `directory`, as sorted full paths."""
  folders, images = _entries(directory)
  found = [_join(directory, name) for name in images]
  for name in folders:
    found.extend(_images_below(_join(directory, name)))
  return sorted(found)


def _labelled_images(directory: str, dataset: str) -> tuple[list[tuple[str, str]], list[str]]:
  """([(path, class name or ""), ...], sorted class names) of a split's directory."""
  classes, loose = _entries(directory)
  if classes and loose:
    raise ConfigError(
        f"config.dataset={dataset!r}: {directory} holds both images ({', '.join(loose[:3])}"
        f"{' ...' if len(loose) > 3 else ''}) and class subfolders ({', '.join(classes[:3])}"
        f"{' ...' if len(classes) > 3 else ''}): put every image in a class subfolder, or "
        f"none (unlabelled)")
  if not classes:
    return [(_join(directory, name), "") for name in loose], []
  images = [(path, name) for name in classes
            for path in _images_below(_join(directory, name))]
  return images, classes


def _held_out(path: str, images_dir: str, fraction: float) -> bool:
  relative = path[len(images_dir):].lstrip("/")
  digest = hashlib.sha256(relative.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") < fraction * 2**64


@functools.lru_cache(maxsize=16)
def open_folder(dataset: str) -> FolderDataset:
  """The dataset of a "folder:PATH[?eval_fraction=F]" name (listed once per process).

  Raises:
    ConfigError: the path is not a directory, holds no image, mixes images and class
      subfolders, or its held-out folder has classes its train folder lacks; a one-line
      message naming the path and what was expected.
  """
  root, fraction = parse(dataset)
  expected = ("a directory of .jpg/.jpeg/.png files, in class subfolders for labels, "
              "optionally split into train/ and validation/ subfolders")
  if not tf.io.gfile.isdir(root):
    what = "does not exist" if not tf.io.gfile.exists(root) else "is not a directory"
    raise ConfigError(f"config.dataset={dataset!r}: {root} {what}; expected {expected}")
  top_folders, _ = _entries(root)
  held_out_dirs = [name for name in HELD_OUT_FOLDERS if name in top_folders]
  if TRAIN in top_folders:
    if len(held_out_dirs) > 1:
      raise ConfigError(f"config.dataset={dataset!r}: {root} has both validation/ and eval/ "
                        "beside train/: keep one held-out folder")
    images_dir = _join(root, TRAIN)
  else:
    images_dir, held_out_dirs = root, []
  train, class_names = _labelled_images(images_dir, dataset)
  if not train:
    raise ConfigError(f"config.dataset={dataset!r}: {images_dir} holds no image; expected "
                      f"{expected}")
  if held_out_dirs:
    held_out_dir = _join(root, held_out_dirs[0])
    validation, held_out_classes = _labelled_images(held_out_dir, dataset)
    unknown = sorted(set(held_out_classes) - set(class_names))
    if unknown or bool(held_out_classes) != bool(class_names):
      raise ConfigError(
          f"config.dataset={dataset!r}: the classes of {held_out_dir} "
          f"({', '.join(unknown or held_out_classes) or 'none'}) are not among those of "
          f"{images_dir} ({', '.join(class_names[:5]) or 'none'}"
          f"{' ...' if len(class_names) > 5 else ''}): use the same class subfolders")
  else:
    held_out = [_held_out(path, images_dir, fraction) for path, _ in train]
    validation = [example for example, out in zip(train, held_out) if out]
    train = [example for example, out in zip(train, held_out) if not out]
  label_of = {name: label for label, name in enumerate(class_names)}
  files = {split: [(path, label_of.get(name, 0)) for path, name in examples]
           for split, examples in ((TRAIN, train), (VALIDATION, validation))}
  return FolderDataset(dataset, root, files, tuple(class_names), fraction)
