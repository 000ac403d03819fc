"""The split fields of a config, checked against the dataset's metadata: every split exists,
and evaluation splits share no example with the splits a model or classifier learns from.
"""

import re

import ml_collections
import tensorflow_datasets as tfds

from bigbigan.data import pipeline
from bigbigan.errors import ConfigError

# The config fields that name TFDS splits (MNIST's configs have the first and the eval one;
# BigBiGAN's all of them).
SPLIT_FIELDS = ("train_split", "probe_train_split", "probe_train_val_split", "knn_train_split",
                "eval_split", "fid_reference_split")
# Pairs of fields that must share no example: the linear probe's fit, early-stopping and test
# splits, and the test split against every split that a model or classifier learns from.
# (k-NN may search the probe's training images, and FID's reference is any real images.)
DISJOINT_SPLITS = (("probe_train_split", "probe_train_val_split"),
                   ("probe_train_split", "eval_split"),
                   ("probe_train_val_split", "eval_split"),
                   ("train_split", "eval_split"),
                   ("knn_train_split", "eval_split"),
                   # The k-NN on train_val selects checkpoints: its queries are held out.
                   ("knn_train_split", "probe_train_val_split"))
_SPLIT_PARTS = re.compile(r"\s*\+\s*")


def split_ranges(splits: tfds.core.SplitDict, spec: str) -> dict[str, list[tuple[int, int]]]:
  """The examples a TFDS split spec selects: [start, stop) ranges per split of the dataset.

  TFDS resolves the slice (absolute, percent, negative or shard bounds) exactly as it does
  when reading, e.g. "train[10000:]" of a 60,000-example train split gives
  {"train": [(10000, 60000)]} and "train+test" both splits whole. Ranges of different specs
  can then be intersected to find shared examples.

  Args:
    splits: the dataset's `builder.info.splits`.
    spec: a TFDS split string, e.g. "train", "train[:10%]", "train[10000:]+test".

  Returns:
    {split name: [(start, stop), ...]}, every range non-empty.

  Raises:
    ValueError: the spec does not parse, names a split the dataset lacks, reaches past a
      split's end or selects no example; a one-line reason.
  """
  ranges: dict[str, list[tuple[int, int]]] = {}
  # Part by part, so the reason names the part at fault.
  for part in _SPLIT_PARTS.split(spec.strip()):
    try:
      instruction = tfds.core.ReadInstruction.from_spec(part)
    except (ValueError, NotImplementedError) as error:
      # TFDS's message runs over lines; the format is on the page it links to.
      raise ValueError(f"'{part}' is not a TFDS split (the format: "
                       "https://www.tensorflow.org/datasets/splits)") from error
    name = getattr(instruction, "split_name", None)  # None for "all".
    if name is not None and name not in splits:
      raise ValueError(f"there is no split '{name}'")
    try:
      absolute = instruction.to_absolute(splits)
    except ValueError as error:
      raise ValueError(f"'{part}' reaches past the end of split '{name}', which has "
                       f"{splits[name].num_examples} examples") from error
    for selected in absolute:
      size = splits[selected.splitname].num_examples
      # TFDS writes a bound at the split's start or end as None.
      start = 0 if selected.from_ is None else selected.from_
      stop = size if selected.to is None else selected.to
      if stop <= start:
        raise ValueError(f"'{part}' selects no example of split '{selected.splitname}', "
                         f"which has {size} examples")
      ranges.setdefault(str(selected.splitname), []).append((start, stop))
  return ranges


def validate_splits(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError unless every split field selects examples of the dataset and the
  evaluation splits are disjoint from the ones learned from (DISJOINT_SPLITS).

  Reads the dataset's TFDS metadata (no examples), or lists an image folder's files
  (data/folder.py: splits "train" and "validation"), so it runs at start, after
  `validate_config` and before anything is written. The mixture dataset, drawn in memory,
  has no splits.

  Raises:
    ConfigError: a split field names a split the dataset lacks, an empty slice or one past a
      split's end, or two fields of a DISJOINT_SPLITS pair share examples; an image folder
      is missing or holds no image.
    DatasetError: the dataset is not prepared (the message says how to prepare it).
  """
  if config.dataset == "mixture":
    return
  splits = pipeline.prepared_builder(config.dataset, config.get("data_dir")).info.splits
  ranges = {}
  for field in SPLIT_FIELDS:
    if field not in config:
      continue
    spec = config[field]
    if not isinstance(spec, str) or not spec.strip():
      raise ConfigError(f"config.{field}={spec!r}: must be a TFDS split such as 'train' or "
                        "'train[:10000]'")
    try:
      ranges[field] = split_ranges(splits, spec)
    except ValueError as error:
      available = "; ".join(f"{name}, {info.num_examples} examples"
                            for name, info in splits.items())
      raise ConfigError(f"config.{field}={spec!r} cannot be read from {config.dataset}: "
                        f"{error} ({config.dataset}'s splits: {available}): name one of "
                        f"them, or a non-empty slice of one such as "
                        f"'{next(iter(splits))}[:10%]'") from error
  for first, second in DISJOINT_SPLITS:
    if first in ranges and second in ranges:
      shared = _shared_examples(ranges[first], ranges[second])
      if shared:
        name, start, stop = shared
        raise ConfigError(
            f"config.{first}={config[first]!r} and config.{second}={config[second]!r} share "
            f"examples {start}..{stop - 1} of split '{name}': evaluation must use held-out "
            f"examples; make them disjoint, e.g. {first}='{name}[10000:]' and "
            f"{second}='{name}[:10000]'")


def _shared_examples(first: dict, second: dict):
  """(split, start, stop) of the first examples that two `split_ranges` share, or None."""
  for name in sorted(set(first) & set(second)):
    for a_start, a_stop in first[name]:
      for b_start, b_stop in second[name]:
        start, stop = max(a_start, b_start), min(a_stop, b_stop)
        if start < stop:
          return name, start, stop
  return None
