"""The FID Inception-v3 network in Flax, and a loader for pytorch-fid's published weights.

FID and Inception Score are only comparable across papers when computed with one network:
the 2015 TensorFlow Inception graph (inception-2015-12-05) that the original FID and IS
code used. pytorch-fid ported that graph's weights to PyTorch; its `FIDInception*` blocks
differ from torchvision's Inception-v3 where the 2015 graph does (average pools that ignore
the zero padding, a max pool in the last block, 1008 classes). This module rebuilds exactly
that network in flax.linen, with submodules named like the PyTorch modules, so that the
state dict converts by name, and reads the `.pth` file with or without PyTorch installed.

Inputs are NHWC images in [-1, 1], resized to 299x299 as pytorch-fid does (bilinear,
half-pixel centres, no antialiasing). The network runs in inference mode only: batch norm
uses the stored statistics.
"""

import collections
import dataclasses
import functools
import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
INPUT_SIZE = 299
NUM_CLASSES = 1008  # The 2015 graph's softmax: 1000 ImageNet classes and 8 unused outputs.


# ---------------------------------------------------------------------------------------
# Resizing
# ---------------------------------------------------------------------------------------

def _bilinear_taps(in_size: int, out_size: int):
  """Source rows and weights of torch's bilinear resize with align_corners=False.

  Output pixel i samples the input at (i + 0.5) * in/out - 0.5, clamped at 0, from its two
  neighbouring pixels. There is no antialiasing, unlike jax.image.resize when shrinking.
  The scale is a float32, as in torch; the position is rounded to float32 once, as torch's
  fused multiply-add does (two roundings would move it by up to one float32 ulp).
  """
  scale = np.float32(in_size) / np.float32(out_size)
  # Exact in float64: a 24-bit scale times a small half-integer.
  source = ((np.arange(out_size) + 0.5) * np.float64(scale) - 0.5).astype(np.float32)
  source = np.maximum(source, np.float32(0))
  low = np.floor(source).astype(np.int32)
  high = np.minimum(low + 1, in_size - 1)
  return low, high, (source - low).astype(np.float32)


def resize_like_pytorch_fid(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """Bilinear resize of [N, H, W, C] images to [N, size, size, C], as pytorch-fid does.

  Matches F.interpolate(mode="bilinear", align_corners=False) without antialiasing,
  separably over height then width; an axis already of the target size is left alone.

  Args:
    images: [N, H, W, C] float images.
    size: output height and width.

  Returns:
    [N, size, size, C] float32 images.
  """
  images = jnp.asarray(images, jnp.float32)
  for axis in (1, 2):
    if images.shape[axis] == size:
      continue
    low, high, weight = _bilinear_taps(images.shape[axis], size)
    weight = weight.reshape([-1 if a == axis else 1 for a in range(images.ndim)])
    images = (jnp.take(images, low, axis=axis) * (1 - weight)
              + jnp.take(images, high, axis=axis) * weight)
  return images


# ---------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------

def _pair(value) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


class ConvBN(nn.Module):
  """Convolution (no bias) + batch norm (eps 1e-3, stored statistics) + ReLU.

  PyTorch's BasicConv2d; `padding` is symmetric, per spatial axis, as in torch.
  """
  features: int
  kernel_size: int | tuple[int, int]
  strides: int = 1
  padding: int | tuple[int, int] = 0
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    pad_h, pad_w = _pair(self.padding)
    x = nn.Conv(self.features, _pair(self.kernel_size), _pair(self.strides),
                padding=((pad_h, pad_h), (pad_w, pad_w)), use_bias=False,
                precision=self.precision, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3_same(x):
  # TensorFlow's average pool divides by the number of real pixels under the window, not
  # counting the zero padding (pytorch-fid's count_include_pad=False patch).
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_stride_2(x):
  return nn.max_pool(x, (3, 3), (2, 2))


class InceptionA(nn.Module):
  """35x35 block (Mixed_5b-d): pytorch-fid's FIDInceptionA."""
  pool_features: int
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    branch1x1 = conv(64, 1, name="branch1x1")(x)
    branch5x5 = conv(48, 1, name="branch5x5_1")(x)
    branch5x5 = conv(64, 5, padding=2, name="branch5x5_2")(branch5x5)
    branch3x3dbl = conv(64, 1, name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(96, 3, padding=1, name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = conv(96, 3, padding=1, name="branch3x3dbl_3")(branch3x3dbl)
    branch_pool = conv(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3_same(x))
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
  """35x35 -> 17x17 reduction (Mixed_6a): torchvision's InceptionB."""
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    branch3x3 = conv(384, 3, strides=2, name="branch3x3")(x)
    branch3x3dbl = conv(64, 1, name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(96, 3, padding=1, name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = conv(96, 3, strides=2, name="branch3x3dbl_3")(branch3x3dbl)
    return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool_3x3_stride_2(x)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block with factorised 7x7 convolutions (Mixed_6b-e): pytorch-fid's FIDInceptionC."""
  channels_7x7: int
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    width = self.channels_7x7
    branch1x1 = conv(192, 1, name="branch1x1")(x)
    branch7x7 = conv(width, 1, name="branch7x7_1")(x)
    branch7x7 = conv(width, (1, 7), padding=(0, 3), name="branch7x7_2")(branch7x7)
    branch7x7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(branch7x7)
    branch7x7dbl = conv(width, 1, name="branch7x7dbl_1")(x)
    branch7x7dbl = conv(width, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(branch7x7dbl)
    branch7x7dbl = conv(width, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(branch7x7dbl)
    branch7x7dbl = conv(width, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(branch7x7dbl)
    branch7x7dbl = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(branch7x7dbl)
    branch_pool = conv(192, 1, name="branch_pool")(_avg_pool_3x3_same(x))
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
  """17x17 -> 8x8 reduction (Mixed_7a): torchvision's InceptionD."""
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    branch3x3 = conv(192, 1, name="branch3x3_1")(x)
    branch3x3 = conv(320, 3, strides=2, name="branch3x3_2")(branch3x3)
    branch7x7x3 = conv(192, 1, name="branch7x7x3_1")(x)
    branch7x7x3 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(branch7x7x3)
    branch7x7x3 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(branch7x7x3)
    branch7x7x3 = conv(192, 3, strides=2, name="branch7x7x3_4")(branch7x7x3)
    return jnp.concatenate([branch3x3, branch7x7x3, _max_pool_3x3_stride_2(x)], axis=-1)


class InceptionE(nn.Module):
  """8x8 block with split 1x3/3x1 convolutions (Mixed_7b, Mixed_7c).

  `max_pool=False` is pytorch-fid's FIDInceptionE_1 (padding-excluding average pool);
  `max_pool=True` is FIDInceptionE_2: the 2015 graph max-pools in its last block.
  """
  max_pool: bool
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    branch1x1 = conv(320, 1, name="branch1x1")(x)
    branch3x3 = conv(384, 1, name="branch3x3_1")(x)
    branch3x3 = jnp.concatenate([
        conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(branch3x3),
        conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(branch3x3)], axis=-1)
    branch3x3dbl = conv(448, 1, name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(384, 3, padding=1, name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = jnp.concatenate([
        conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(branch3x3dbl),
        conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(branch3x3dbl)], axis=-1)
    if self.max_pool:
      # Padding counts as -inf for a max pool, as in torch and TensorFlow.
      pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3_same(x)
    branch_pool = conv(192, 1, name="branch_pool")(pooled)
    return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class Classifier(nn.Module):
  """The 2048 -> 1008 fully connected layer; returns (logits, logits without the bias)."""
  num_classes: int = NUM_CLASSES
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (x.shape[-1], self.num_classes))
    bias = self.param("bias", nn.initializers.zeros, (self.num_classes,))
    unbiased = jnp.dot(x, kernel, precision=self.precision)
    return unbiased + bias, unbiased


class FIDInceptionV3(nn.Module):
  """pytorch-fid's FID Inception-v3, inference only.

  Call with images [N, H, W, 3] in [-1, 1] (any H, W: they are resized to 299x299).
  Returns a dict of float32 arrays:
    "pool": [N, 2048] the final average-pooled features (TensorFlow's pool_3), for FID.
    "logits": [N, 1008] the fully connected layer's output, bias included.
    "logits_unbiased": [N, 1008] pool @ weights, without the bias: the original Inception
      Score code rebuilds the 2015 graph's softmax from its MatMul weights alone, over all
      1008 outputs, so this is what `fid.inception_score` should be given for numbers
      comparable with published ones (torchmetrics and torch-fidelity do the same).

  Resizing [-1, 1] images equals pytorch-fid's resizing of [0, 1] images followed by
  x -> 2x - 1, because bilinear weights sum to one.

  Attributes:
    precision: matmul/convolution precision. HIGHEST by default so GPUs and TPUs do not
      drop to TF32/bfloat16 passes, which would move FID in its later digits.
  """
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, images):
    conv = functools.partial(ConvBN, precision=self.precision)
    x = resize_like_pytorch_fid(images, INPUT_SIZE)
    x = conv(32, 3, strides=2, name="Conv2d_1a_3x3")(x)
    x = conv(32, 3, name="Conv2d_2a_3x3")(x)
    x = conv(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_stride_2(x)
    x = conv(80, 1, name="Conv2d_3b_1x1")(x)
    x = conv(192, 3, name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_stride_2(x)
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features, self.precision, name=name)(x)
    x = InceptionB(self.precision, name="Mixed_6a")(x)
    for name, channels_7x7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                               ("Mixed_6e", 192)):
      x = InceptionC(channels_7x7, self.precision, name=name)(x)
    x = InceptionD(self.precision, name="Mixed_7a")(x)
    x = InceptionE(max_pool=False, precision=self.precision, name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, precision=self.precision, name="Mixed_7c")(x)
    pool = jnp.mean(x, axis=(1, 2))
    logits, logits_unbiased = Classifier(precision=self.precision, name="fc")(pool)
    return {"pool": pool, "logits": logits, "logits_unbiased": logits_unbiased}


@functools.lru_cache(maxsize=1)
def variable_shapes() -> dict:
  """{"params": ..., "batch_stats": ...} of FIDInceptionV3 as ShapeDtypeStructs (no compute)."""
  images = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), images)


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
  for collection, tree in variable_shapes().items():
    for path, leaf in traverse_util.flatten_dict(tree).items():
      torch_name = ".".join([*path[:-1], _TORCH_LEAF_NAMES[(collection, path[-1])]])
      inverse_axes = np.argsort(_TO_FLAX_AXES[len(leaf.shape)])
      expected[torch_name] = (collection, path, tuple(leaf.shape[a] for a in inverse_axes))
  return expected


def _listing(names, limit: int = 6) -> str:
  shown = ", ".join(names[:limit])
  return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def convert_pytorch_state_dict(state_dict: Mapping[str, Any]) -> dict:
  """Flax variables of FIDInceptionV3 from pytorch-fid's FID Inception state dict.

  Args:
    state_dict: tensor name -> array (NumPy arrays, or CPU torch tensors), with
      pytorch-fid's names ("Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch1x1.bn.running_var",
      "fc.weight", ...). `num_batches_tracked` buffers are ignored.

  Returns:
    {"params": ..., "batch_stats": ...} float32 NumPy trees for FIDInceptionV3.apply.

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
  """FIDInceptionV3 variables from pytorch-fid's weights file.

  Args:
    path: a local copy of pt_inception-2015-12-05-6726825d.pth (see FID_WEIGHTS_URL).

  Returns:
    {"params": ..., "batch_stats": ...} for FIDInceptionV3().apply.

  Raises:
    FileNotFoundError: if the file is missing (the message says where to get it).
    ValueError: if it is not pytorch-fid's FID Inception state dict.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"FID Inception weights not found at {path}; download them "
                            f"from {FID_WEIGHTS_URL}")
  return convert_pytorch_state_dict(read_torch_state_dict(path))
