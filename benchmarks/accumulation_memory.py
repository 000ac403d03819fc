"""Gradient accumulation's memory: XLA's peak temporary bytes of the BigBiGAN update per k.

    python benchmarks/accumulation_memory.py --cpu_devices=8 \
        --config=configs/biggan.py:tiny --batch_size=256 --accumulation_steps 1 2 4 8

Compiles the update (`bigbigan.benchmark.compile_update`) for each
`config.accumulation_steps` = k over all devices (with `--cpu_devices`, that many simulated
CPU devices) without running it or allocating the state: the state's and the images' shapes
only. For each k it prints XLA's memory analysis of one device's program
(`temp_size_in_bytes`: the peak of the buffers the program allocates, activations and
gradients; the arguments are the state and the images, the same for every k) and the number
of collectives of each kind in the compiled program: the same counts for every k show that
the micro-batch split (`bigbigan_update.split_micro_batches`) moves no data between devices.
"""

import argparse
import os


def measure(config, mesh, accumulation_steps: int) -> dict:
  """Compiles the update of `config` at `accumulation_steps` on `mesh`; returns its per-device
  {"temp_bytes", "argument_bytes", "compile_seconds"} and collective counts
  (benchmark.collective_counts)."""
  from bigbigan import benchmark  # pylint: disable=g-import-not-at-top

  config = config.copy_and_resolve_references()
  config.accumulation_steps = accumulation_steps
  compiled, seconds = benchmark.compile_update(config, mesh, accelerator_program=True)
  memory = compiled.memory_analysis()
  return {"temp_bytes": memory.temp_size_in_bytes,
          "argument_bytes": memory.argument_size_in_bytes, "compile_seconds": seconds,
          **benchmark.collective_counts(compiled)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/biggan.py:tiny")
  parser.add_argument("--batch_size", type=int, default=256, help="the global batch")
  parser.add_argument("--accumulation_steps", type=int, nargs="+", default=[1, 2, 4, 8])
  parser.add_argument("--cpu_devices", type=int, default=0,
                      help="simulate this many CPU devices (0: the devices there are)")
  args = parser.parse_args()
  if args.cpu_devices:  # Before jax is imported.
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""),
                                        f"--xla_force_host_platform_device_count="
                                        f"{args.cpu_devices}"]).strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
  import jax  # pylint: disable=g-import-not-at-top
  from bigbigan import sharding  # pylint: disable=g-import-not-at-top
  from bigbigan.config_files import load_config  # pylint: disable=g-import-not-at-top

  config = load_config(args.config)
  config.batch_size = args.batch_size
  mesh = sharding.make_mesh()
  devices = mesh.devices.size
  print(f"{args.config}, batch {args.batch_size} over {devices} {jax.devices()[0].platform} "
        f"device(s), d_steps {config.d_steps}, {config.compute_dtype}; per device:")
  print("| k | micro-batch (global) | per device | temp MiB | vs k=1 | arguments MiB "
        "| all-to-all | all-gather | collective-permute | all-reduce | compile s |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  first = None
  for k in args.accumulation_steps:
    figures = measure(config, mesh, k)
    first = first or figures["temp_bytes"]
    micro = args.batch_size // k
    print(f"| {k} | {micro} | {micro // devices} | {figures['temp_bytes'] / 2**20:.1f} | "
          f"{figures['temp_bytes'] / first:.2f} | {figures['argument_bytes'] / 2**20:.1f} | "
          f"{figures['all-to-all']} | {figures['all-gather']} | "
          f"{figures['collective-permute']} | {figures['all-reduce']} | "
          f"{figures['compile_seconds']:.0f} |", flush=True)


if __name__ == "__main__":
  main()
