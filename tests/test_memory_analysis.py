"""`python -m bigbigan.benchmark --memory`: XLA's memory analysis of the update, compiled from
shapes alone, accounts for the state and the images it is given and grows with the batch."""

import jax
import numpy as np
import pytest

from bigbigan import benchmark, sharding
from bigbigan.families import bigbigan as bigbigan_family
from conftest import REPO, apply_overrides, load_config


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
  state_bytes = sum(
      np.prod(s.shape, dtype=int) * s.dtype.itemsize
      // (devices if sharding.is_split_field(path)
          and sharding.split_axis(s.shape, devices) is not None else 1)
      for path, s in jax.tree_util.tree_leaves_with_path(shapes))
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
