"""The Flax FID Inception network: architecture and resizing.

The architecture is checked against a table of pytorch-fid's state dict written from
torchvision's Inception-v3 definition (tests/fid_inception_state_dict.py, not generated from
the Flax module); the resize against torch's interpolation weights, kept as a fixture. The
end-to-end comparison with pytorch-fid's network (random weights) needs PyTorch and
pytorch-fid, and is skipped where they are not installed: the real weights' comparison with
the network's own forward is tests/test_inception_real_weights.py, which always runs.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fid_inception_state_dict as state_dicts
from bigbigan.evaluation import inception
from bigbigan.evaluation import inception_weights

DATA = pathlib.Path(__file__).parent / "data"


@pytest.mark.slow
def test_parameter_count_and_output_shapes():
  shapes = state_dicts.torch_state_dict_shapes()
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


def test_resize_matches_torch_interpolate():
  """Against torch's own interpolation weights (tests/make_torch_resize_fixture.py):
  F.interpolate(mode="bilinear", align_corners=False) from 71, 320 and 400 pixels to 299."""
  fixture = np.load(DATA / "torch_bilinear_resize.npz")
  matrices = {299: np.eye(299)}  # An axis of the target size is left alone, as by torch.
  matrices.update({int(name[5:]): fixture[name].astype(np.float64)
                   for name in fixture.files if name.startswith("from_")})
  # Noise, so that a sample position one float32 ulp off would show (~3e-5 at 320 rows).
  for height, width in ((71, 400), (320, 299)):
    images = np.random.default_rng(0).uniform(-1, 1, (1, height, width, 3)).astype(np.float32)
    # Height, then width: two matrix products (one three-way einsum takes a minute).
    want = np.einsum("jw,niwc->nijc", matrices[width],
                     np.einsum("ih,nhwc->niwc", matrices[height], images))
    got = inception.resize_like_pytorch_fid(images, 299)
    np.testing.assert_allclose(got, want, atol=5e-7)


def test_matches_pytorch_fid(monkeypatch):
  """Random weights through both networks: the pool features and logits agree."""
  torch = state_dicts.import_or_skip("torch")
  pytorch_fid = state_dicts.import_or_skip("pytorch_fid.inception")
  state = state_dicts.random_state_dict(seed=1)
  # fid_inception_v3 downloads the published weights; hand it the random ones instead.
  monkeypatch.setattr(pytorch_fid, "load_state_dict_from_url",
                      lambda *args, **kwargs: {k: torch.from_numpy(v) for k, v in state.items()})
  torch_model = pytorch_fid.InceptionV3([3]).eval()  # Loads strictly: the table is complete.
  variables = inception_weights.convert_pytorch_state_dict(state)
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
