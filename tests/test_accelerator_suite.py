"""benchmarks/accelerator_suite.py plans each config's batches from the documented memory
predictions: the largest per-device batch predicted to fit the device, and half of it.
(Its dry run: tests/test_tensorflow_free.py.)"""

import re

import pytest

from conftest import REPO, load_script


@pytest.fixture(scope="module")
def suite():
  return load_script("accelerator_suite")


def test_the_plan_is_the_largest_batch_predicted_to_fit_and_half_of_it(suite):
  # 90% of 141 GB is 118 GiB; of 80 GB, 67 GiB.
  assert suite.planned_batches("resnet50", 141e9) == (128, 64)
  assert suite.planned_batches("revnet4x", 141e9) == (128, 64)
  assert suite.planned_batches("resnet50", 80e9) == (128, 64)
  assert suite.planned_batches("revnet4x", 80e9) == (64, 32)
  with pytest.raises(SystemExit, match="no planned batch of revnet4x fits 16 GB"):
    suite.planned_batches("revnet4x", 16e9)


def test_the_plans_predictions_are_the_documented_memory_table(suite):
  documented = {}
  for name, batch, gib in re.findall(r"^\| `(\w+)` \| (\d+) \| ([\d.]+) \| (?:yes|no) /",
                                     (REPO / "docs" / "benchmarks.md").read_text(), re.M):
    documented.setdefault(name, {})[int(batch)] = float(gib)
  assert documented == suite.PREDICTED_PEAK_GIB
