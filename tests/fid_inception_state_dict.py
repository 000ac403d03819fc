"""pytorch-fid's FID Inception state dict, tabulated, for tests/test_inception.py and
tests/test_inception_weights.py.

The table is written here from torchvision's Inception-v3 definition (not generated from
the Flax module), so that it checks the network and the converter independently.
"""

import importlib

import numpy as np
import pytest


def _block_a(cin, pool_features):
  return [("branch1x1", cin, 64, 1, 1), ("branch5x5_1", cin, 48, 1, 1),
          ("branch5x5_2", 48, 64, 5, 5), ("branch3x3dbl_1", cin, 64, 1, 1),
          ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3),
          ("branch_pool", cin, pool_features, 1, 1)], 64 + 64 + 96 + pool_features


def _block_b(cin):
  return [("branch3x3", cin, 384, 3, 3), ("branch3x3dbl_1", cin, 64, 1, 1),
          ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3)], 384 + 96 + cin


def _block_c(cin, c7):
  return [("branch1x1", cin, 192, 1, 1), ("branch7x7_1", cin, c7, 1, 1),
          ("branch7x7_2", c7, c7, 1, 7), ("branch7x7_3", c7, 192, 7, 1),
          ("branch7x7dbl_1", cin, c7, 1, 1), ("branch7x7dbl_2", c7, c7, 7, 1),
          ("branch7x7dbl_3", c7, c7, 1, 7), ("branch7x7dbl_4", c7, c7, 7, 1),
          ("branch7x7dbl_5", c7, 192, 1, 7), ("branch_pool", cin, 192, 1, 1)], 4 * 192


def _block_d(cin):
  return [("branch3x3_1", cin, 192, 1, 1), ("branch3x3_2", 192, 320, 3, 3),
          ("branch7x7x3_1", cin, 192, 1, 1), ("branch7x7x3_2", 192, 192, 1, 7),
          ("branch7x7x3_3", 192, 192, 7, 1), ("branch7x7x3_4", 192, 192, 3, 3)], 320 + 192 + cin


def _block_e(cin):
  return [("branch1x1", cin, 320, 1, 1), ("branch3x3_1", cin, 384, 1, 1),
          ("branch3x3_2a", 384, 384, 1, 3), ("branch3x3_2b", 384, 384, 3, 1),
          ("branch3x3dbl_1", cin, 448, 1, 1), ("branch3x3dbl_2", 448, 384, 3, 3),
          ("branch3x3dbl_3a", 384, 384, 1, 3), ("branch3x3dbl_3b", 384, 384, 3, 1),
          ("branch_pool", cin, 192, 1, 1)], 320 + 2 * 384 + 2 * 384 + 192


def torch_convolutions():
  """[(module name, in channels, out channels, kernel height, kernel width)] in order."""
  convs = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3),
           ("Conv2d_2b_3x3", 32, 64, 3, 3), ("Conv2d_3b_1x1", 64, 80, 1, 1),
           ("Conv2d_4a_3x3", 80, 192, 3, 3)]
  channels = 192
  blocks = [("Mixed_5b", _block_a, 32), ("Mixed_5c", _block_a, 64), ("Mixed_5d", _block_a, 64),
            ("Mixed_6a", _block_b), ("Mixed_6b", _block_c, 128), ("Mixed_6c", _block_c, 160),
            ("Mixed_6d", _block_c, 160), ("Mixed_6e", _block_c, 192), ("Mixed_7a", _block_d),
            ("Mixed_7b", _block_e), ("Mixed_7c", _block_e)]
  for block_name, make_block, *args in blocks:
    block, channels = make_block(channels, *args)
    convs += [(f"{block_name}.{name}", *shape) for name, *shape in block]
  assert channels == 2048
  return convs


def torch_state_dict_shapes():
  """pytorch-fid's FID Inception state dict: name -> shape, num_batches_tracked included."""
  shapes = {}
  for name, cin, cout, kernel_h, kernel_w in torch_convolutions():
    shapes[f"{name}.conv.weight"] = (cout, cin, kernel_h, kernel_w)
    for buffer in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{name}.bn.{buffer}"] = (cout,)
    shapes[f"{name}.bn.num_batches_tracked"] = ()
  shapes["fc.weight"], shapes["fc.bias"] = (1008, 2048), (1008,)
  return shapes


def random_state_dict(seed=0):
  """Random weights with He-scaled convolutions and plausible batch-norm statistics."""
  rng = np.random.default_rng(seed)
  state = {}
  for name, shape in torch_state_dict_shapes().items():
    if name.endswith("num_batches_tracked"):
      state[name] = np.array(7, np.int64)
    elif name.endswith("conv.weight"):
      state[name] = rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))
    elif name.endswith("running_var") or name.endswith("bn.weight"):
      state[name] = rng.uniform(0.5, 1.5, shape)
    elif name == "fc.weight":
      state[name] = rng.standard_normal(shape) / np.sqrt(shape[1])
    else:
      state[name] = rng.standard_normal(shape) * 0.1
  return {name: value.astype(np.float32) if value.dtype == np.float64 else value
          for name, value in state.items()}


def import_or_skip(module_name):
  # Broken installs (e.g. a torchvision built for another torch) raise more than ImportError.
  try:
    return importlib.import_module(module_name)
  except Exception as error:  # pylint: disable=broad-except
    pytest.skip(f"{module_name} unavailable: {error}")
