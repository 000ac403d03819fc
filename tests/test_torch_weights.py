"""Reading pytorch-fid's weights: state-dict conversion and the torch-free .pth reader.

The expected state dict is a table written from torchvision's Inception-v3 definition
(tests/fid_inception_state_dict.py). The tests comparing with torch.load need PyTorch; they
are skipped where it is not installed.
"""

import pathlib
import pickle
import zipfile

import numpy as np
import pytest
from flax import traverse_util

import fid_inception_state_dict as state_dicts
from bigbigan.evaluation import inception
from bigbigan.evaluation import torch_weights


def test_converter_puts_every_tensor_in_its_place():
  state = state_dicts.random_state_dict()
  variables = torch_weights.convert_pytorch_state_dict(state)
  flat = traverse_util.flatten_dict(variables, sep="/")
  expected = traverse_util.flatten_dict(inception.variable_shapes(), sep="/")
  assert {key: value.shape for key, value in flat.items()} == {
      key: value.shape for key, value in expected.items()}
  for name, *_ in state_dicts.torch_convolutions():
    path = name.replace(".", "/")
    # OIHW -> HWIO: kernel[h, w, in, out] == weight[out, in, h, w].
    np.testing.assert_array_equal(flat[f"params/{path}/conv/kernel"],
                                  np.transpose(state[f"{name}.conv.weight"], (2, 3, 1, 0)))
    for collection, leaf, buffer in (("params", "scale", "weight"), ("params", "bias", "bias"),
                                     ("batch_stats", "mean", "running_mean"),
                                     ("batch_stats", "var", "running_var")):
      np.testing.assert_array_equal(flat[f"{collection}/{path}/bn/{leaf}"],
                                    state[f"{name}.bn.{buffer}"])
  np.testing.assert_array_equal(flat["params/fc/kernel"], state["fc.weight"].T)
  np.testing.assert_array_equal(flat["params/fc/bias"], state["fc.bias"])
  kernel = flat["params/Mixed_6b/branch7x7_2/conv/kernel"]
  assert kernel.shape == (1, 7, 128, 128) and kernel.flags.c_contiguous


@pytest.mark.parametrize("change, message", [
    ("drop", r"1 missing: Mixed_7c\.branch_pool\.bn\.running_var$"),
    ("add", r"1 unexpected: AuxLogits\.fc\.weight$"),
    ("reshape", r"1 mis-shaped: fc\.weight \(1000, 2048\) \(expected \(1008, 2048\)\)$"),
], ids=["missing", "unexpected", "mis-shaped"])
def test_converter_names_what_does_not_fit(change, message):
  state = state_dicts.random_state_dict()
  if change == "drop":
    del state["Mixed_7c.branch_pool.bn.running_var"]
  elif change == "add":
    state["AuxLogits.fc.weight"] = np.zeros((1008, 768), np.float32)
  else:
    state["fc.weight"] = state["fc.weight"][:1000]
  with pytest.raises(ValueError, match=r"not pytorch-fid's FID Inception: " + message):
    torch_weights.convert_pytorch_state_dict(state)


def test_missing_weights_file_says_where_to_get_it(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"missing\.pth.*pt_inception-2015-12-05"):
    torch_weights.load_fid_inception(tmp_path / "missing.pth")


def test_pth_reader_refuses_classes_other_than_tensors(tmp_path):
  path = tmp_path / "evil.pth"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", pickle.dumps({"x": zipfile.ZipInfo("x")}))
  with pytest.raises(pickle.UnpicklingError, match="refusing to load zipfile.ZipInfo"):
    torch_weights._read_torch_file_without_torch(str(path))  # pylint: disable=protected-access


@pytest.mark.parametrize("file_format", ["zip", "legacy"])
def test_pth_reader_rebuilds_tensors_of_both_torch_formats(file_format):
  # Written by torch 2.13 with torch.save (legacy: _use_new_zipfile_serialization=False)
  # from: base = arange(24, float64).reshape(4, 6); {"conv.weight": arange(54.).reshape(
  # 2, 3, 3, 3) / 10, "bn.num_batches_tracked": tensor(7), "view.transposed": base.t(),
  # "view.offset": base[1:3, 2:], "mask": [True, False, True], "half": [1.5, -2] float16}.
  path = pathlib.Path(__file__).parent / "data" / f"torch_state_dict_{file_format}.pth"
  got = torch_weights._read_torch_file_without_torch(str(path))  # pylint: disable=protected-access
  base = np.arange(24, dtype=np.float64).reshape(4, 6)
  want = {"conv.weight": np.arange(54, dtype=np.float32).reshape(2, 3, 3, 3) / np.float32(10),
          "bn.num_batches_tracked": np.array(7, np.int64), "view.transposed": base.T,
          "view.offset": base[1:3, 2:], "mask": np.array([True, False, True]),
          "half": np.array([1.5, -2.0], np.float16)}
  assert list(got) == list(want)
  for name, value in want.items():
    assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
    np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.parametrize("zip_format", [True, False])
def test_pth_reader_without_torch_matches_torch_load(tmp_path, zip_format):
  torch = state_dicts.import_or_skip("torch")
  state = {name: torch.from_numpy(value) for name, value in state_dicts.random_state_dict().items()}
  base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
  state["view.transposed"] = base.t()  # Non-contiguous strides.
  state["view.offset"] = base[1:3, 2:]  # Shares the storage, at an offset.
  state["mask"] = torch.tensor([True, False, True])
  path = tmp_path / "state.pth"
  torch.save(state, path, _use_new_zipfile_serialization=zip_format)
  got = torch_weights._read_torch_file_without_torch(str(path))  # pylint: disable=protected-access
  assert got.keys() == state.keys()
  for name, tensor in state.items():
    assert got[name].dtype == tensor.numpy().dtype, name
    np.testing.assert_array_equal(got[name], tensor.numpy(), err_msg=name)
  del state["view.transposed"], state["view.offset"], state["mask"]
  torch.save(state, path)
  loaded = torch_weights.load_fid_inception(path)
  np.testing.assert_array_equal(loaded["params"]["fc"]["kernel"], state["fc.weight"].numpy().T)
