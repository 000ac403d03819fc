"""progress.track: the lines it logs, with a fake clock."""

import itertools
import logging

from bigbigan import progress


def _lines(caplog):
  return [record.getMessage() for record in caplog.records]


def test_logs_done_total_rate_and_time_left(caplog):
  caplog.set_level(logging.INFO)
  ticks = itertools.count(0.0, 2.0)  # Each item's work takes 2 s of the fake clock.
  items = progress.track(range(5), "FID samples", total=500, count=lambda _: 100,
                         every_seconds=3.0, clock=lambda: next(ticks))
  assert list(items) == [0, 1, 2, 3, 4]
  # Items done at t = 2, 4, 6, 8, 10; lines at least 3 s apart: t = 4 and 8; the summary at
  # t = 12 (its own clock reading).
  assert _lines(caplog) == [
      "FID samples: 200/500 (40.0%), 50.0/s, 6s left",
      "FID samples: 400/500 (80.0%), 50.0/s, 2s left",
      "FID samples: 500 in 12s (41.7/s)",
  ]


def test_unknown_total_and_units(caplog):
  caplog.set_level(logging.INFO)
  ticks = itertools.count(0.0, 40.0)
  list(progress.track(range(2), "linear probe", unit="epochs", clock=lambda: next(ticks)))
  assert _lines(caplog) == ["linear probe: 1 epochs, 40.0s per epoch",
                            "linear probe: 2 epochs, 40.0s per epoch",
                            "linear probe: 2 epochs in 2m0s (60.0s per epoch)"]


def test_the_count_is_clamped_to_the_total_and_durations_read_well(caplog):
  caplog.set_level(logging.INFO)
  ticks = itertools.count(0.0, 3725.0)
  list(progress.track(range(2), "features", total=150, count=lambda _: 100, every_seconds=0,
                      clock=lambda: next(ticks)))
  # Padded batches can count more rows than the split holds.
  assert _lines(caplog)[-2:] == ["features: 150/150 (100.0%), 37.2s per item, 0s left",
                                 "features: 150 in 3h6m15s (55.9s per item)"]
