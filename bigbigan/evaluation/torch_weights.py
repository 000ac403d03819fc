"""Reads pytorch-fid's FID Inception weights (a PyTorch `.pth` file) into Flax variables.

pytorch-fid publishes the 2015 Inception graph's weights only as a torch.save'd state dict.
This module turns that file into `{"params", "batch_stats"}` for
`inception.FIDInceptionV3`: it renames the tensors by the network's own variable names and
transposes them to Flax's layouts, checking every name and shape. It does not need PyTorch:
JAX installs rarely have it, so when torch is missing the `.pth` file (zip or legacy format)
is read by a restricted unpickler that rebuilds tensors only and refuses any other class,
so that loading a downloaded file cannot run code.
"""

import collections
import dataclasses
import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from bigbigan.evaluation import inception


# ---------------------------------------------------------------------------------------
# PyTorch state dict -> Flax variables
# ---------------------------------------------------------------------------------------

# (flax collection, flax leaf name) -> torch parameter or buffer name.
_TORCH_LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
# Axis order taking a torch tensor to the flax layout, by rank: conv OIHW -> HWIO,
# linear [out, in] -> [in, out]; vectors stay as they are.
_TO_FLAX_AXES = {4: (2, 3, 1, 0), 2: (1, 0), 1: (0,)}


def _expected_torch_tensors() -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
  """torch name -> (flax collection, flax path, torch-layout shape), for every variable."""
  expected = {}
  for collection, tree in inception.variable_shapes().items():
    for path, leaf in traverse_util.flatten_dict(tree).items():
      torch_name = ".".join([*path[:-1], _TORCH_LEAF_NAMES[(collection, path[-1])]])
      inverse_axes = np.argsort(_TO_FLAX_AXES[len(leaf.shape)])
      expected[torch_name] = (collection, path, tuple(leaf.shape[a] for a in inverse_axes))
  return expected


def _listing(names, limit: int = 6) -> str:
  shown = ", ".join(names[:limit])
  return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def convert_pytorch_state_dict(state_dict: Mapping[str, Any]) -> dict:
  """Flax variables of inception.FIDInceptionV3 from pytorch-fid's FID Inception state dict.

  Args:
    state_dict: tensor name -> array (NumPy arrays, or CPU torch tensors), with
      pytorch-fid's names ("Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch1x1.bn.running_var",
      "fc.weight", ...). `num_batches_tracked` buffers are ignored.

  Returns:
    {"params": ..., "batch_stats": ...} float32 NumPy trees for inception.FIDInceptionV3.apply.

  Raises:
    ValueError: naming every missing, unexpected or wrongly shaped tensor.
  """
  expected = _expected_torch_tensors()
  given = {name: value for name, value in state_dict.items()
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
    raise ValueError("state dict is not pytorch-fid's FID Inception: " + "; ".join(problems))
  return traverse_util.unflatten_dict(flat_variables)


# ---------------------------------------------------------------------------------------
# Reading .pth files
# ---------------------------------------------------------------------------------------

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
# Leading pickle of torch's pre-1.6 ("legacy") serialisation format.
_LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c


@dataclasses.dataclass
class _Storage:
  dtype: np.dtype
  numel: int
  data: np.ndarray | None = None


@dataclasses.dataclass
class _TensorView:
  """A tensor as the pickle describes it; its storage's bytes are read afterwards."""
  storage: _Storage
  offset: int
  shape: tuple[int, ...]
  strides: tuple[int, ...]

  def to_numpy(self) -> np.ndarray:
    data = self.storage.data
    if data is None or len(data) != self.storage.numel:
      raise ValueError("truncated .pth file: a tensor's storage is missing or short")
    if 0 in self.shape:
      return np.zeros(self.shape, data.dtype)
    last = self.offset + sum((size - 1) * stride for size, stride in zip(self.shape, self.strides))
    if self.offset < 0 or last >= len(data):
      raise ValueError("corrupt .pth file: a tensor reaches outside its storage")
    return np.lib.stride_tricks.as_strided(
        data[self.offset:], self.shape, [stride * data.itemsize for stride in self.strides]
    ).copy()


def _rebuild_tensor(storage, offset, shape, strides, *unused_flags):
  return _TensorView(storage, int(offset), tuple(shape), tuple(strides))


def _rebuild_parameter(data, *unused_flags):
  return data


class _StateDictUnpickler(pickle.Unpickler):
  """Unpickles tensors and dicts only: any other class in the file is refused.

  Storages arrive as persistent ids and are collected in `storages` (key -> _Storage)
  for the caller to fill with their bytes.
  """

  def __init__(self, file, storages: dict):
    super().__init__(file)
    self.storages = storages

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return _rebuild_parameter
    if module == "torch" and name in _STORAGE_DTYPES:
      return np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")
    raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a .pth file: "
                                 "only a state dict of tensors is expected")

  def persistent_load(self, pid):
    # Zip format: ("storage", type, key, location, numel); legacy adds view metadata.
    kind, dtype, key, _, numel, *view = (
        part.decode("ascii") if isinstance(part, bytes) else part for part in pid)
    if kind != "storage" or not isinstance(dtype, np.dtype) or any(v is not None for v in view):
      raise pickle.UnpicklingError(f"unsupported persistent id in .pth file: {pid!r}")
    return self.storages.setdefault(str(key), _Storage(dtype, int(numel)))


def _read_torch_file_without_torch(path: str) -> dict[str, np.ndarray]:
  """A tensor state dict from a torch.save file, in either format, without PyTorch."""
  storages = {}
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as archive:
      pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
      if len(pickles) != 1:
        raise ValueError(f"{path}: expected one data.pkl in the archive, found {pickles}")
      prefix = pickles[0][:-len("data.pkl")]
      with archive.open(pickles[0]) as f:
        state_dict = _StateDictUnpickler(f, storages).load()
      if prefix + "byteorder" in archive.namelist() and archive.read(
          prefix + "byteorder") != b"little":
        raise ValueError(f"{path}: big-endian .pth files are not supported")
      for key, storage in storages.items():
        storage.data = np.frombuffer(archive.read(f"{prefix}data/{key}"), storage.dtype)
  else:
    with open(path, "rb") as f:
      header = [_StateDictUnpickler(f, storages).load() for _ in range(3)]
      if header[0] != _LEGACY_MAGIC_NUMBER:
        raise ValueError(f"{path} is not a torch.save file")
      if not header[2].get("little_endian", True):
        raise ValueError(f"{path}: big-endian .pth files are not supported")
      state_dict = _StateDictUnpickler(f, storages).load()
      # The storages follow in this order, each as an int64 element count and its bytes.
      for key in _StateDictUnpickler(f, storages).load():
        storage = storages[str(key)]
        numel = int.from_bytes(f.read(8), "little")
        storage.data = np.frombuffer(f.read(numel * storage.dtype.itemsize), storage.dtype)
  if not isinstance(state_dict, Mapping):
    raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a state dict")
  return {name: tensor.to_numpy() for name, tensor in state_dict.items()}


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Tensor name -> NumPy array from a torch.save'd state dict.

  Uses torch.load when PyTorch is installed, and otherwise a reader of the serialisation
  format (zip or legacy) that rebuilds only tensors and refuses every other pickled class.

  Args:
    path: the .pth file.

  Returns:
    The state dict as NumPy arrays.
  """
  path = os.fspath(path)
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return _read_torch_file_without_torch(path)
  state_dict = torch.load(path, map_location="cpu", weights_only=True)
  return {name: tensor.numpy() for name, tensor in state_dict.items()}


def load_fid_inception(path: str | os.PathLike) -> dict:
  """inception.FIDInceptionV3 variables from pytorch-fid's weights file.

  Args:
    path: a local copy of pt_inception-2015-12-05-6726825d.pth (see inception.FID_WEIGHTS_URL).

  Returns:
    {"params": ..., "batch_stats": ...} for inception.FIDInceptionV3().apply.

  Raises:
    FileNotFoundError: if the file is missing (the message says where to get it).
    ValueError: if it is not pytorch-fid's FID Inception state dict.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"FID Inception weights not found at {path}; download them "
                            f"from {inception.FID_WEIGHTS_URL}")
  return convert_pytorch_state_dict(read_torch_state_dict(path))
