"""Multi-process jobs: the flags of the entry points, and a watch that ends a job whose peer
failed or died.

`--distributed` makes every process join one jax.distributed job before anything touches
the devices: Cloud TPU pods and SLURM clusters are detected by JAX itself; elsewhere the
coordinator flags say where process 0 listens and who is who.

Inside `supervised()`, a slow peer only slows the job (collectives and checkpoint barriers
wait for it), but a peer that fails or dies ends it within a bounded time, each process
printing one line that names the peer:

- a process that raises tells the others through the coordination service's key-value
  store before it exits; every process polls for that every `POLL_SECONDS`;
- every process beats (a counter in the store) from a thread of its own, whatever its main
  thread is doing, so a process whose counter stands still for `--peer_timeout_seconds` is
  taken for dead (killed, out of memory, its host gone);
- a job that ends well leaves together: a last rendezvous in the store, still watched,
  then `jax.distributed.shutdown()`, whose barrier every process then reaches at once.

Left to themselves, the other processes would wait in a collective or a checkpoint barrier
for minutes (orbax's barriers time out after 300 to 1,200 s) and then abort with a stack
trace from JAX's own heartbeat check.
"""

import contextlib
import os
import sys
import threading
import time
import traceback
from typing import Iterator

from absl import flags

_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host runs).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (when not auto-detected).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_PEER_TIMEOUT = flags.DEFINE_integer(
    "peer_timeout_seconds", 60, "A peer whose heartbeat stands still this long is taken "
    "for dead and the job stops (below JAX's own 100 s heartbeat timeout).")

POLL_SECONDS = 2.0
_PREFIX = "bigbigan_job"


def initialize_if_requested() -> None:
  """jax.distributed.initialize() with the flags' values, if --distributed."""
  if _DISTRIBUTED.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return (text.splitlines() or [type(error).__name__])[0][:500]


class PeerWatch:
  """Beats for this process and watches the others' beats and failure notices (a thread).

  Args:
    client: the jax.distributed client (its key-value store).
    process_index, process_count: this process and the job's size.
    timeout_seconds: a peer whose beat stands still this long is taken for dead.
    program: the prefix of the lines printed (`bigbigan`).
  """

  def __init__(self, client, process_index: int, process_count: int, timeout_seconds: float,
               program: str = "bigbigan"):
    self._client, self._index, self._count = client, process_index, process_count
    self._timeout, self._program = timeout_seconds, program
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name="bigbigan_peer_watch", daemon=True)

  def start(self) -> "PeerWatch":
    self._beat()
    self._thread.start()
    return self

  def stop(self) -> None:
    self._stop.set()
    self._thread.join()

  def _beat(self) -> None:
    self._client.key_value_increment(f"{_PREFIX}/beat/{self._index}", 1)

  def _stop_job(self, message: str) -> None:
    """Prints the line and leaves at once: the main thread may be blocked in a collective
    with the lost peer, and Python's exit would wait on it."""
    print(f"{self._program}: error: {message}", file=sys.stderr, flush=True)
    os._exit(1)  # pylint: disable=protected-access

  def _run(self) -> None:
    last_change = {}  # peer -> (its beat count, when it was last seen to change)
    while not self._stop.wait(POLL_SECONDS):
      try:
        self._beat()
        failures = self._client.key_value_dir_get(f"{_PREFIX}/failed/")
        beats = dict(self._client.key_value_dir_get(f"{_PREFIX}/beat/"))
      except Exception as error:  # pylint: disable=broad-except
        if self._stop.is_set():
          return
        # The store lives in process 0: it is gone, or unreachable.
        self._stop_job(f"process 0, the job's coordinator, is unreachable "
                       f"({_first_line(error)}); this process stops too")
      for key, message in failures:
        peer = key.rsplit("/", 1)[-1]
        if peer != str(self._index):
          self._stop_job(f"process {peer} failed ({message}); this process stops too")
      now = time.monotonic()
      for peer in range(self._count):
        if peer == self._index:
          continue
        count = beats.get(f"{_PREFIX}/beat/{peer}")
        seen = last_change.get(peer)
        if seen is None or seen[0] != count:
          last_change[peer] = (count, now)
        elif now - seen[1] > self._timeout:
          self._stop_job(f"process {peer} stopped responding (no heartbeat for "
                         f"{self._timeout:.0f} s: killed, out of memory or its host lost); "
                         "this process stops too")

  def announce_failure(self, message: str) -> None:
    """Tells the other processes that this one failed, and why (one line)."""
    with contextlib.suppress(Exception):
      self._client.key_value_set(f"{_PREFIX}/failed/{self._index}", message,
                                 allow_overwrite=True)

  def leave_together(self) -> None:
    """Waits, still watched, until every process has finished."""
    self._client.key_value_set(f"{_PREFIX}/done/{self._index}", "1", allow_overwrite=True)
    while len(self._client.key_value_dir_get(f"{_PREFIX}/done/")) < self._count:
      time.sleep(POLL_SECONDS / 4)


@contextlib.contextmanager
def supervised(peer_timeout_seconds: float | None = None,
               program: str = "bigbigan") -> Iterator[None]:
  """Runs the body of a multi-process job under a PeerWatch, then leaves the job in order.

  A no-op outside a jax.distributed job. Inside one, an exception in the body is announced
  to the other processes (its first line), reported here (one line for a BigBiganError,
  else its traceback) and ends this process with status 1 at once: JAX's shutdown barrier
  at Python's exit would wait for peers that stop on the notice without reaching it.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  from bigbigan.errors import BigBiganError  # pylint: disable=g-import-not-at-top
  client = jax_distributed.global_state.client
  if client is None or jax.process_count() == 1:
    yield
    return
  timeout = peer_timeout_seconds or _PEER_TIMEOUT.value
  watch = PeerWatch(client, jax.process_index(), jax.process_count(), timeout, program).start()
  try:
    yield
  except BaseException as error:  # pylint: disable=broad-except
    watch.announce_failure(_first_line(error))
    if isinstance(error, BigBiganError):
      print(f"{program}: error: {error}", file=sys.stderr)
    else:
      traceback.print_exc()
    if jax.process_index() == 0:
      # The store lives here: give the others a poll to read the notice before it goes.
      time.sleep(2 * POLL_SECONDS)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access
  watch.leave_together()
  watch.stop()
  jax.distributed.shutdown()
