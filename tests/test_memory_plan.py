"""The memory plan's arithmetic (bigbigan/memory_plan.py): what remat frees, the fit with its
headroom, the state's share per device count, and the accumulation a batch needs."""

import jax
import numpy as np
import pytest

from bigbigan import memory_plan, sharding
from bigbigan.errors import ConfigError
from bigbigan.state import NetworkState, TrainState


def _analysis(total, saved_no_remat, saved):
  return {"total_bytes": total, "saved_activation_bytes_no_remat": saved_no_remat,
          "saved_activation_bytes": saved}


def test_the_peak_takes_off_what_remat_frees_and_the_fit_keeps_a_tenth():
  analysis = _analysis(10 * memory_plan.GIB, {"encoder": 3 * memory_plan.GIB, "generator": 0},
                       {"encoder": memory_plan.GIB, "generator": 0})
  assert memory_plan.predicted_peak_bytes(analysis) == 8 * memory_plan.GIB
  v5e = memory_plan.fit(analysis, "v5e")  # 16 GiB, 14.4 usable.
  assert v5e["fits"] and v5e["headroom_bytes"] == pytest.approx(6.4 * memory_plan.GIB)
  v3 = memory_plan.fit(_analysis(15 * memory_plan.GIB, {}, {}), "v3")
  assert not v3["fits"] and v3["headroom_bytes"] == pytest.approx(-0.6 * memory_plan.GIB)
  assert memory_plan.describe(v3, "none").startswith("does NOT fit a v3 device (16.0 GiB")
  with pytest.raises(ConfigError, match="unknown; one of v3, v4, v5e"):
    memory_plan.fit(analysis, "v7")


def test_the_state_share_splits_the_moments_and_the_ema_alone():
  big, small = jax.ShapeDtypeStruct((256, 128), np.float32), jax.ShapeDtypeStruct((8,), np.float32)
  state = TrainState(
      step=small, rng=small, encoder=None, ema={"generator": big},
      generator=NetworkState(params=big, opt_state=big, batch_stats={"mean": big}),
      discriminator=NetworkState(params=small, opt_state=small, batch_stats={}))
  whole = big.size * 4  # Params, batch stats, moments, EMA: the last two split.
  for devices in (1, 8, 64):
    assert memory_plan.per_device_state_bytes(state, devices) == (
        2 * whole + 2 * (whole // devices) + 4 * small.size * 4), devices
  assert sharding.split_axis(big.shape, 64) == 0


@pytest.mark.parametrize("global_batch, devices, largest, steps", [
    (2048, 8, 256, 1), (2048, 8, 100, 4), (2048, 8, 128, 2), (2048, 64, 40, 1),
    (2048, 256, 4, 2), (2048, 256, 3, 4), (2048, 8, 1, 256)])
def test_accumulation_takes_the_fewest_micro_batches_that_fit_and_divide(
    global_batch, devices, largest, steps):
  assert memory_plan.accumulation_steps(global_batch, devices, largest) == steps
  micro = global_batch // devices // steps
  assert micro <= largest and micro * steps * devices == global_batch


def test_accumulation_refuses_what_cannot_run():
  with pytest.raises(ConfigError, match="does not divide over 3 devices"):
    memory_plan.accumulation_steps(2048, 3, 64)
  with pytest.raises(ConfigError, match="no micro-batch"):
    memory_plan.accumulation_steps(2048, 8, 0)
