"""`python -m bigbigan.benchmark --memory`: XLA's memory analysis of the update, compiled from
shapes alone, accounts for the state and the images it is given and grows with the batch;
`--device_kind` says whether it fits."""

import json
import os
import subprocess
import sys

import jax
import pytest

from bigbigan import benchmark, memory_plan
from bigbigan.families import bigbigan as bigbigan_family
from conftest import FAST_COMPILE, REPO, apply_overrides, load_config


@pytest.mark.slow
def test_memory_analysis_counts_the_state_and_the_images_and_grows_with_the_batch():
  config = load_config(f"{REPO}/configs/biggan.py:tiny")
  devices = jax.device_count()
  small, large = (benchmark.memory_analysis(apply_overrides(config.copy_and_resolve_references(),
                                                            {"batch_size": batch}))
                  for batch in (devices * 2, devices * 8))
  # The arguments, counted here from the shapes: each device's part of the state
  # (sharding.state_shardings: the split leaves' 1/8, the rest whole), and its rows of the
  # uint8 images [d_steps, batch, side, side, 3].
  shapes = jax.eval_shape(bigbigan_family.state_initializer(
      config, bigbigan_family.build_networks(config)), jax.random.PRNGKey(0))
  state_bytes = memory_plan.per_device_state_bytes(shapes, devices)
  side = config.encoder.resolution
  for figures in (small, large):
    images = config.d_steps * figures["per_device_batch"] * side * side * 3
    # Within 1 KB: XLA counts 160 bytes fewer (measured, of 5.2 MB on 8 devices); the images
    # alone are 48 KB a device here or more, and all devices' images 8x that.
    assert abs(figures["argument_bytes"] - (state_bytes + images)) <= 1024
    assert figures["total_bytes"] == (figures["argument_bytes"] + figures["output_bytes"]
                                      - figures["alias_bytes"] + figures["temp_bytes"])
    # The state is donated: its buffers are reused for the new state.
    assert figures["alias_bytes"] >= 0.9 * state_bytes
  # Activations scale with the batch: 4x the rows, more than twice the temporaries.
  assert large["temp_bytes"] > 2 * small["temp_bytes"]


def _benchmark(*flags):
  return subprocess.run([sys.executable, "-m", "bigbigan.benchmark",
                         "--config=configs/biggan.py:tiny", *flags], cwd=REPO,
                        env={**os.environ, "XLA_FLAGS": FAST_COMPILE}, capture_output=True,
                        text=True, timeout=600)


@pytest.mark.slow
def test_device_kind_says_whether_the_update_fits_with_its_headroom():
  result = _benchmark("--memory", "--device_kind=v5e")
  assert result.returncode == 0, result.stderr[-3000:]
  verdict = result.stdout.splitlines()[0]
  report = json.loads(result.stdout[result.stdout.index("{"):])
  fit = report["fit"]
  assert verdict.startswith("fits a v5e device (16.0 GiB, 14.4 usable): predicted peak ")
  assert fit["fits"] and fit["predicted_peak_bytes"] == memory_plan.predicted_peak_bytes(report)
  assert fit["headroom_bytes"] == pytest.approx(0.9 * 16 * 2**30 - fit["predicted_peak_bytes"])
  refused = _benchmark("--device_kind=v5e")
  assert refused.returncode == 1 and refused.stderr.strip().splitlines()[-1] == (
      "bigbigan.benchmark: error: --device_kind goes with --memory: the fit of a compiled "
      "program")
