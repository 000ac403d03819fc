"""The multi-host flags of the entry points (`bigbigan.main`, `bigbigan.evaluate`).

`--distributed` makes every process join one jax.distributed job before anything touches
the devices: Cloud TPU pods and SLURM clusters are detected by JAX itself; elsewhere the
coordinator flags say where process 0 listens and who is who.
"""

from absl import flags

_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host runs).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (when not auto-detected).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def initialize_if_requested() -> None:
  """jax.distributed.initialize() with the flags' values, if --distributed."""
  if _DISTRIBUTED.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)


def shutdown_if_initialized() -> None:
  """Leaves the jax.distributed job once this process's work is done.

  Every process waits here for the others before any of them tears down: left to Python's
  exit, process 0 can take the coordination service away while the others are still
  leaving (they abort), or wait on a process stuck in its own teardown.
  """
  if _DISTRIBUTED.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.shutdown()
