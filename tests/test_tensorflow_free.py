"""The accelerator path imports no TensorFlow, TFDS or clu: `python -m bigbigan.benchmark`
and `python -m bigbigan.summary` run where those are not installed (an accelerator host
that gets the working tree and a few pure-Python wheels, docs/benchmarks.md)."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

# Runs a module as `python -m` would, with importing the three packages raising ImportError.
_BLOCKED_RUN = """
import importlib.abc, runpy, sys
class Blocked(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "clu"):
      raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, Blocked())
module, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_module(module, run_name="__main__")
"""


def _run_without_tensorflow(module, *flags):
  return subprocess.run([sys.executable, "-c", _BLOCKED_RUN, module, *flags], cwd=REPO,
                        capture_output=True, text=True, timeout=600)


def test_the_blocker_blocks():
  result = subprocess.run([sys.executable, "-c", _BLOCKED_RUN, "bigbigan.main",
                           "--config=configs/bigbigan_base.py:tiny", "--workdir=/nowhere"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode != 0 and "is not installed here" in result.stderr


@pytest.mark.slow
def test_benchmark_runs_and_prints_its_json_without_tensorflow():
  result = _run_without_tensorflow("bigbigan.benchmark", "--config=configs/biggan.py:tiny",
                                   "--steps=1")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout[result.stdout.index("{"):])
  assert report["finite"] and report["median_step_seconds"] > 0
  assert report["flops_per_step"] > 0


@pytest.mark.slow
def test_summary_runs_without_tensorflow():
  result = _run_without_tensorflow("bigbigan.summary", "--config=configs/biggan.py:tiny")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "generator" in result.stdout
