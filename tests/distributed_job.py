"""`python tests/distributed_job.py MODE PROCESS_ID PORT`: one process of a 2-process
jax.distributed job under `bigbigan.distributed.supervised`, for tests/test_distributed.py.

Each process holds 2 CPU devices; the job sums a global array over all 4 in a jitted
collective, so process 0 waits inside it for process 1. Process 1, before its part:
- "ok": nothing;
- "slow": sleeps 3 peer timeouts (its watch thread keeps beating): the job still ends well;
- "raise": raises a ConfigError (a user's error, one line);
- "die": kills itself (SIGKILL), as the kernel's OOM killer would.
Prints "sum=<value>" on success.
"""

import os
import signal
import sys
import time

PEER_TIMEOUT_SECONDS = 8  # Polls every 2 s: a starved process still beats well within it.


def main(mode: str, process_id: int, port: int) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from bigbigan import distributed  # pylint: disable=g-import-not-at-top
  from bigbigan.errors import ConfigError  # pylint: disable=g-import-not-at-top

  jax.distributed.initialize(f"localhost:{port}", 2, process_id)
  with distributed.supervised(peer_timeout_seconds=PEER_TIMEOUT_SECONDS):
    mesh = jax.make_mesh((4,), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))
    local = np.full((2,), process_id + 1.0, np.float32)  # Process 0 gives 1s, process 1 2s.
    warm = jax.make_array_from_process_local_data(sharding, local)
    print(f"warm-up sum={float(total(warm))}", flush=True)
    if process_id == 1:
      if mode == "slow":
        time.sleep(3 * PEER_TIMEOUT_SECONDS)
      elif mode == "raise":
        raise ConfigError("config.total_steps=0: must be a positive integer")
      elif mode == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    print(f"sum={float(total(warm))}", flush=True)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
