"""Progress of long evaluation loops in the log: done / total, rate and time left.

FID's 50,000 samples, the k-NN features of a whole split and the linear probe's epochs run
for minutes to hours inside one evaluation; `track` wraps their loops so the log says how
far they are (on process 0 only: every process runs the same loop).

    for batch in progress.track(batches, "FID samples", total=50_000,
                                count=lambda batch: len(batch[1])):
      ...

logs, at most every `every_seconds` and once at the end:

    FID samples: 12,800/50,000 (25.6%), 431.0/s, 1m26s left
    FID samples: 50,000 in 1m56s (431.0/s)

and for slow items, e.g. `unit="epochs"`, "... (40.0s per epoch)".
"""

import time
from typing import Callable, Iterable, Iterator, Optional, TypeVar

import jax
from absl import logging

T = TypeVar("T")
EVERY_SECONDS = 30.0


def _duration(seconds: float) -> str:
  """3725.0 -> '1h2m5s'; 86.2 -> '1m26s'; 4.5 -> '4s'."""
  seconds = int(round(seconds))
  hours, seconds = divmod(seconds, 3600)
  minutes, seconds = divmod(seconds, 60)
  if hours:
    return f"{hours}h{minutes}m{seconds}s"
  return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


def _rate(done: float, seconds: float, unit: str) -> str:
  """'431.0/s', or for work slower than one a second '40.0s per epoch'."""
  if done >= seconds:
    return f"{done / max(seconds, 1e-9):.1f}/s"
  return f"{seconds / max(done, 1e-9):.1f}s per {unit.removesuffix('s') or 'item'}"


def track(items: Iterable[T], what: str, total: Optional[int] = None,
          count: Callable[[T], int] = lambda item: 1, *, unit: str = "",
          every_seconds: float = EVERY_SECONDS,
          clock: Callable[[], float] = time.monotonic) -> Iterator[T]:
  """Yields `items`, logging the progress of the work done on them.

  Args:
    items: the loop's items (batches, epochs).
    what: the work's name in the log, e.g. "FID samples".
    total: how much work there is, in the units of `count`; None if unknown (no ETA).
    count: the work in one item (e.g. the examples of a batch); counted once the caller
      asks for the next item, i.e. once its work is done.
    unit: a word after the counts ("epochs"); empty for items counted as examples.
    every_seconds: the shortest time between two progress lines.
    clock: seconds, for the rates (a fake one in tests).
  """
  log = jax.process_index() == 0
  suffix = f" {unit}" if unit else ""
  start = last = clock()
  done = 0
  for item in items:
    yield item
    done += count(item)
    now = clock()
    if log and now - last >= every_seconds:
      last = now
      rate = done / max(now - start, 1e-9)
      if total:
        shown = min(done, total)
        logging.info("%s: %s/%s%s (%.1f%%), %s, %s left", what, f"{shown:,}",
                     f"{total:,}", suffix, 100 * shown / total,
                     _rate(done, now - start, unit), _duration(max(total - done, 0) / rate))
      else:
        logging.info("%s: %s%s, %s", what, f"{done:,}", suffix, _rate(done, now - start, unit))
  if log:
    elapsed = clock() - start
    shown = min(done, total) if total else done
    logging.info("%s: %s%s in %s (%s)", what, f"{shown:,}", suffix, _duration(elapsed),
                 _rate(done, elapsed, unit))
