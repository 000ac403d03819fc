"""The Flax FID Inception: architecture, state-dict conversion, resizing, .pth reading.

The architecture is checked against a table of pytorch-fid's state dict written here from
torchvision's Inception-v3 definition (not generated from the Flax module). The optional
tests need PyTorch (and pytorch-fid for the end-to-end comparison); they are skipped where
those are not installed.
"""

import importlib
import pathlib
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from bigbigan.evaluation import inception


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


def _torch_convolutions():
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


def _torch_state_dict_shapes():
  """pytorch-fid's FID Inception state dict: name -> shape, num_batches_tracked included."""
  shapes = {}
  for name, cin, cout, kernel_h, kernel_w in _torch_convolutions():
    shapes[f"{name}.conv.weight"] = (cout, cin, kernel_h, kernel_w)
    for buffer in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{name}.bn.{buffer}"] = (cout,)
    shapes[f"{name}.bn.num_batches_tracked"] = ()
  shapes["fc.weight"], shapes["fc.bias"] = (1008, 2048), (1008,)
  return shapes


def _random_state_dict(seed=0):
  """Random weights with He-scaled convolutions and plausible batch-norm statistics."""
  rng = np.random.default_rng(seed)
  state = {}
  for name, shape in _torch_state_dict_shapes().items():
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


@pytest.mark.slow
def test_parameter_count_and_output_shapes():
  shapes = _torch_state_dict_shapes()
  learned = sum(np.prod(shape) for name, shape in shapes.items()
                if not any(key in name for key in ("running", "num_batches")))
  running = sum(np.prod(shape) for name, shape in shapes.items() if "running" in name)
  assert (learned, running) == (23_850_960, 34_432)
  assert learned + running == 23_885_392  # Everything in the state dict but the counters.
  variables = inception.variable_shapes()
  size = lambda tree: sum(leaf.size for leaf in jax.tree.leaves(tree))
  assert (size(variables["params"]), size(variables["batch_stats"])) == (learned, running)
  for image_shape in ((2, 64, 64, 3), (1, 299, 299, 3)):
    outputs = jax.eval_shape(inception.FIDInceptionV3().apply, variables,
                             jax.ShapeDtypeStruct(image_shape, jnp.float32))
    count = image_shape[0]
    assert {key: value.shape for key, value in outputs.items()} == {
        "pool": (count, 2048), "logits": (count, 1008), "logits_unbiased": (count, 1008)}


def test_converter_puts_every_tensor_in_its_place():
  state = _random_state_dict()
  variables = inception.convert_pytorch_state_dict(state)
  flat = traverse_util.flatten_dict(variables, sep="/")
  expected = traverse_util.flatten_dict(inception.variable_shapes(), sep="/")
  assert {key: value.shape for key, value in flat.items()} == {
      key: value.shape for key, value in expected.items()}
  for name, *_ in _torch_convolutions():
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
  state = _random_state_dict()
  if change == "drop":
    del state["Mixed_7c.branch_pool.bn.running_var"]
  elif change == "add":
    state["AuxLogits.fc.weight"] = np.zeros((1008, 768), np.float32)
  else:
    state["fc.weight"] = state["fc.weight"][:1000]
  with pytest.raises(ValueError, match=r"not pytorch-fid's FID Inception: " + message):
    inception.convert_pytorch_state_dict(state)


@pytest.mark.parametrize("height, width", [(64, 48), (320, 299), (600, 450)])
def test_resize_matches_unantialiased_half_pixel_bilinear(height, width):
  # jax.image.scale_and_translate without antialiasing samples at the same half-pixel
  # centres as torch's align_corners=False, and renormalises the clipped edge taps, which
  # equals torch's clamping of the source coordinate. Its sample positions round
  # differently in float32 (up to ~1e-4 pixel), so the images are smooth waves: rounding
  # moves them by < 5e-5, while a wrong tap would move them by ~0.1.
  rng = np.random.default_rng(height)
  rows, columns = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  frequencies = rng.uniform(0.05, 0.3, (2, 3))
  images = np.sin(rows[None, :, :, None] * frequencies[0] + columns[None, :, :, None]
                  * frequencies[1] + rng.uniform(0, 6, 3)).astype(np.float32)
  got = inception.resize_like_pytorch_fid(images, 299)
  scale = jnp.array([299 / height, 299 / width])
  want = jax.image.scale_and_translate(images, (1, 299, 299, 3), (1, 2), scale, jnp.zeros(2),
                                       method="linear", antialias=False)
  np.testing.assert_allclose(got, want, atol=5e-5)
  # Images already 299x299 pass through unchanged, as with torch.
  np.testing.assert_array_equal(inception.resize_like_pytorch_fid(got, 299), got)


def test_missing_weights_file_says_where_to_get_it(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"missing\.pth.*pt_inception-2015-12-05"):
    inception.load_fid_inception(tmp_path / "missing.pth")


def test_pth_reader_refuses_classes_other_than_tensors(tmp_path):
  path = tmp_path / "evil.pth"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", pickle.dumps({"x": zipfile.ZipInfo("x")}))
  with pytest.raises(pickle.UnpicklingError, match="refusing to load zipfile.ZipInfo"):
    inception._read_torch_file_without_torch(str(path))  # pylint: disable=protected-access


@pytest.mark.parametrize("file_format", ["zip", "legacy"])
def test_pth_reader_rebuilds_tensors_of_both_torch_formats(file_format):
  # Written by torch 2.13 with torch.save (legacy: _use_new_zipfile_serialization=False)
  # from: base = arange(24, float64).reshape(4, 6); {"conv.weight": arange(54.).reshape(
  # 2, 3, 3, 3) / 10, "bn.num_batches_tracked": tensor(7), "view.transposed": base.t(),
  # "view.offset": base[1:3, 2:], "mask": [True, False, True], "half": [1.5, -2] float16}.
  path = pathlib.Path(__file__).parent / "data" / f"torch_state_dict_{file_format}.pth"
  got = inception._read_torch_file_without_torch(str(path))  # pylint: disable=protected-access
  base = np.arange(24, dtype=np.float64).reshape(4, 6)
  want = {"conv.weight": np.arange(54, dtype=np.float32).reshape(2, 3, 3, 3) / np.float32(10),
          "bn.num_batches_tracked": np.array(7, np.int64), "view.transposed": base.T,
          "view.offset": base[1:3, 2:], "mask": np.array([True, False, True]),
          "half": np.array([1.5, -2.0], np.float16)}
  assert list(got) == list(want)
  for name, value in want.items():
    assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
    np.testing.assert_array_equal(got[name], value, err_msg=name)


def _import_or_skip(module_name):
  # Broken installs (e.g. a torchvision built for another torch) raise more than ImportError.
  try:
    return importlib.import_module(module_name)
  except Exception as error:  # pylint: disable=broad-except
    pytest.skip(f"{module_name} unavailable: {error}")


def test_resize_matches_torch_interpolate():
  torch = _import_or_skip("torch")
  # Noise, so that a sample position one float32 ulp off would show (~3e-5 at 320 rows).
  for height, width in ((71, 400), (320, 299)):
    images = np.random.default_rng(0).uniform(-1, 1, (1, 3, height, width)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(images), size=(299, 299),
                                           mode="bilinear", align_corners=False).numpy()
    got = inception.resize_like_pytorch_fid(images.transpose(0, 2, 3, 1), 299)
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, atol=5e-7)


@pytest.mark.parametrize("zip_format", [True, False])
def test_pth_reader_without_torch_matches_torch_load(tmp_path, zip_format):
  torch = _import_or_skip("torch")
  state = {name: torch.from_numpy(value) for name, value in _random_state_dict().items()}
  base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
  state["view.transposed"] = base.t()  # Non-contiguous strides.
  state["view.offset"] = base[1:3, 2:]  # Shares the storage, at an offset.
  state["mask"] = torch.tensor([True, False, True])
  path = tmp_path / "state.pth"
  torch.save(state, path, _use_new_zipfile_serialization=zip_format)
  got = inception._read_torch_file_without_torch(str(path))  # pylint: disable=protected-access
  assert got.keys() == state.keys()
  for name, tensor in state.items():
    assert got[name].dtype == tensor.numpy().dtype, name
    np.testing.assert_array_equal(got[name], tensor.numpy(), err_msg=name)
  del state["view.transposed"], state["view.offset"], state["mask"]
  torch.save(state, path)
  loaded = inception.load_fid_inception(path)
  np.testing.assert_array_equal(loaded["params"]["fc"]["kernel"], state["fc.weight"].numpy().T)


def test_matches_pytorch_fid(monkeypatch):
  """Random weights through both networks: the pool features and logits agree."""
  torch = _import_or_skip("torch")
  pytorch_fid = _import_or_skip("pytorch_fid.inception")
  state = _random_state_dict(seed=1)
  # fid_inception_v3 downloads the published weights; hand it the random ones instead.
  monkeypatch.setattr(pytorch_fid, "load_state_dict_from_url",
                      lambda *args, **kwargs: {k: torch.from_numpy(v) for k, v in state.items()})
  torch_model = pytorch_fid.InceptionV3([3]).eval()  # Loads strictly: the table is complete.
  variables = inception.convert_pytorch_state_dict(state)
  apply = jax.jit(inception.FIDInceptionV3().apply)
  rng = np.random.default_rng(2)
  worst = 0.0
  for size in (299, 64):
    images01 = rng.uniform(0, 1, (2, 3, size, size)).astype(np.float32)  # pytorch-fid's input
    with torch.no_grad():
      want_pool = torch_model(torch.from_numpy(images01))[0][:, :, 0, 0].double().numpy()
    outputs = apply(variables, 2 * images01.transpose(0, 2, 3, 1) - 1)
    pool = np.asarray(outputs["pool"], np.float64)
    scale = np.abs(want_pool).max()
    worst = max(worst, np.abs(pool - want_pool).max() / scale)
    np.testing.assert_allclose(pool, want_pool, atol=1e-4 * scale)
    want_unbiased = want_pool @ state["fc.weight"].T.astype(np.float64)
    logit_scale = np.abs(want_unbiased).max()
    np.testing.assert_allclose(outputs["logits_unbiased"], want_unbiased, atol=1e-4 * logit_scale)
    np.testing.assert_allclose(outputs["logits"], want_unbiased + state["fc.bias"],
                               atol=1e-4 * logit_scale)
  print(f"largest pool difference / largest pool feature: {worst:.2e}")
