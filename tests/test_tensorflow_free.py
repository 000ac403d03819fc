"""The accelerator path imports no TensorFlow, TFDS or clu: `python -m bigbigan.benchmark`,
`python -m bigbigan.summary` and benchmarks/accelerator_suite.py run where those are not
installed (an accelerator host that gets the working tree and a few pure-Python wheels,
docs/benchmarks.md). And the core install, `pip install .` without the `train` extra, has
none of them and is enough to load a bundle and encode (bigbigan.load, Colab)."""

import json
import os
import textwrap
import subprocess
import sys

import pytest

from conftest import FAST_COMPILE, REPO

# Runs a module as `python -m` would (or a script, given its path) as if the three packages
# were not installed: a None in sys.modules makes `import` raise ModuleNotFoundError and
# `importlib.util.find_spec` return None (how etils and JAX's cache probe for TensorFlow).
_BLOCKED_RUN = """
import runpy, sys
for name in ("tensorflow", "tensorflow_datasets", "clu"):
  sys.modules[name] = None
target, sys.argv = sys.argv[1], sys.argv[1:]
if target.endswith(".py"):
  runpy.run_path(target, run_name="__main__")
else:
  runpy.run_module(target, run_name="__main__")
"""


def _run_without_tensorflow(module, *flags, devices=8):
  env = {**os.environ,
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"}
  return subprocess.run([sys.executable, "-c", _BLOCKED_RUN, module, *flags], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)


def test_the_blocker_blocks():
  result = subprocess.run([sys.executable, "-c", _BLOCKED_RUN, "bigbigan.main",
                           "--config=configs/bigbigan_base.py:tiny", "--workdir=/nowhere"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode != 0 and "None in sys.modules" in result.stderr


@pytest.mark.slow(seconds=68)
def test_benchmark_runs_and_prints_its_json_without_tensorflow():
  # On one device: what is tested is the imports; 8 simulated ones add partitioning.
  result = _run_without_tensorflow("bigbigan.benchmark", "--config=configs/biggan.py:tiny",
                                   "--steps=1", devices=1)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout[result.stdout.index("{"):])
  assert report["finite"] and report["median_step_seconds"] > 0
  assert report["flops_per_step"] > 0


@pytest.mark.slow
def test_summary_runs_without_tensorflow():
  result = _run_without_tensorflow("bigbigan.summary", "--config=configs/biggan.py:tiny")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "generator" in result.stdout


@pytest.mark.slow(seconds=130)
def test_accelerator_suite_dry_run_writes_every_measurement_without_tensorflow(tmp_path):
  # On one device, as a one-GPU host has: on 8 simulated ones the four bf16 updates cost
  # minutes of compilation and partitioning that this test does not need.
  result = _run_without_tensorflow("benchmarks/accelerator_suite.py", "--tiny", "--steps=1",
                                   "--peak_tflops=2", f"--out={tmp_path}", devices=1)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "accelerator_suite.json").read_text())
  updates = report["updates"]
  # Both encoders' updates, in bf16 (the dry run compiles the planned batch alone; the plan
  # of a batch and half of it is tests/test_accelerator_suite.py's).
  assert [(u["config"], u["role"], u["per_device_batch"]) for u in updates] == [
      ("resnet50", "best", 8), ("revnet4x", "best", 8)]
  for update in updates:
    assert "error" not in update, update["error"]
    assert update["finite"] and update["compute_dtype"] == "bfloat16"
    assert update["batch_size"] == update["per_device_batch"] * report["devices"]
    assert update["images_per_second"] == pytest.approx(
        update["d_steps"] * update["batch_size"] / update["median_step_seconds"])
    assert update["mfu"] == pytest.approx(update["tflops_per_second_per_device"] / 2)
    assert update["compile_seconds"] > 0
  # Each encoder's bundle, exported from an initialised state and loaded, encodes 256 images.
  assert [(e["config"], e["batch"]) for e in report["encode"]] == [("resnet50", 256),
                                                                   ("revnet4x", 256)]
  for encode in report["encode"]:
    assert "error" not in encode, encode["error"]
    assert encode["images_per_second"] == pytest.approx(256 / encode["median_seconds"])
    assert encode["encoder_parameters"] > 0


# Run by the core install's Python: TensorFlow, TFDS and clu are not installed there at all.
_LOAD_AND_ENCODE = textwrap.dedent("""
    import importlib.util, json, sys
    absent = [m for m in ("tensorflow", "tensorflow_datasets", "clu")
              if importlib.util.find_spec(m) is None]
    import bigbigan
    from bigbigan.data import samples
    model = bigbigan.load(sys.argv[1])
    images, labels = samples.mnist_sample("test", 8)
    features = model.encode(images)
    print(json.dumps({"absent": absent, "version": bigbigan.__version__,
                      "shapes": {k: list(v.shape) for k, v in features.items()},
                      "generated": list(model.generate(features["z_mean"]).shape)}))
""")


@pytest.mark.slow  # A virtual environment and pip install of the core (pip's cache): ~1 min.
def test_the_core_install_loads_a_bundle_and_encodes_without_tensorflow(tiny_bundle, tmp_path):
  venv = tmp_path / "core"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
  python = str(venv / "bin" / "python")
  install = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            str(REPO)], capture_output=True, text=True, timeout=900)
  assert install.returncode == 0, install.stderr[-3000:]
  result = subprocess.run([python, "-c", _LOAD_AND_ENCODE, str(tiny_bundle["bundle"])],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "XLA_FLAGS": FAST_COMPILE})
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["absent"] == ["tensorflow", "tensorflow_datasets", "clu"]
  latent = tiny_bundle["config"].latent_dim
  assert report["shapes"]["z_mean"] == [8, latent] and report["shapes"]["avepool_feat"][0] == 8
  side = tiny_bundle["config"].resolution
  assert report["generated"] == [8, side, side, 3]
