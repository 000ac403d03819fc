"""The D steps' loop on this machine: the update with its D steps under one `lax.scan`
against the same steps written out, step time and compile time.

    taskset -c 0 env XLA_FLAGS=--xla_cpu_multi_thread_eigen=false \
        python benchmarks/d_steps_loop.py --config=configs/bigbigan_base.py:tiny \
        --d_steps 1 2 [--steps=5]

For each `config.d_steps`, builds the BigBiGAN update twice
(`make_bigbigan_train_step(..., unroll_d_steps=False | True)`), runs it once on random
images (compile and first step), then times `--steps` more, and prints a Markdown table.
The update picks the loop by the mesh's platform (written out on CPUs, scanned elsewhere);
this measures what that choice is worth here. Figures: docs/benchmarks.md, "The D steps'
loop".
"""

import argparse
import os
import time

import numpy as np

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def measure(config, unroll: bool, steps: int) -> dict:
  """Seconds to compile and run the first step, and per step after it, of `config`'s update
  with the D steps scanned (`unroll` False) or written out."""
  import jax  # pylint: disable=g-import-not-at-top
  from bigbigan import sharding  # pylint: disable=g-import-not-at-top
  from bigbigan.families import bigbigan as bigbigan_family  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  networks = bigbigan_family.build_networks(config)
  state = jax.jit(bigbigan_family.state_initializer(config, networks),
                  out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(config.seed))
  update = bigbigan_family.make_update(config, networks, mesh, unroll_d_steps=unroll)
  side = config.encoder.resolution
  images = np.random.default_rng(0).integers(
      0, 256, (config.d_steps, config.batch_size, side, side, 3), dtype=np.uint8)
  start = time.perf_counter()
  state, _ = update(state, images)
  jax.block_until_ready(state)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps):
    state, _ = update(state, images)
  jax.block_until_ready(state)
  return {"first_step_seconds": first, "step_seconds": (time.perf_counter() - start) / steps}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/bigbigan_base.py:tiny")
  parser.add_argument("--d_steps", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args()
  from bigbigan.config_files import load_config  # pylint: disable=g-import-not-at-top
  lines = ["| d_steps | loop | compile + first step (s) | step (s) |", "| --- | --- | --- | --- |"]
  for d_steps in args.d_steps:
    config = load_config(os.path.join(REPO, args.config))
    config.d_steps = d_steps
    for unroll, name in ((False, "scanned"), (True, "written out")):
      figures = measure(config, unroll, args.steps)
      lines.append(f"| {d_steps} | {name} | {figures['first_step_seconds']:.1f} | "
                   f"{figures['step_seconds']:.3f} |")
      print(lines[-1], flush=True)
  print("\n".join(lines))


if __name__ == "__main__":
  main()
