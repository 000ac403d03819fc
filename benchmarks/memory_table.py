"""Memory planning without a device: the full-size update's predicted peak per device batch.

    python benchmarks/memory_table.py [--configs resnet50 revnet4x] \
        [--batches 32 64 128 256] [--json=/tmp/memory_table.json]

For each configs/<name>.py (bf16, its default) and per-device batch, compiles the update
for one device of this machine (`bigbigan.benchmark.memory_analysis`: from shapes alone,
nothing allocated) and prints a Markdown table of:
- XLA's peak of one device's program (arguments + outputs - aliased + temporaries) with
  `config.remat="none"`, and whether it fits 80 GB and 141 GB devices with 10% to spare
  (the runtime's context, cuDNN's workspaces, fragmentation);
- the activations that G, E and D save for backprop (`saved_activation_bytes`) with remat
  "none" and "blocks", and the peak predicted with "blocks": XLA's peak less the activations
  that remat frees (a CPU compile does not realise remat's saving itself).

These are predictions from a CPU compile, to check on a GPU (benchmarks/accelerator_suite.py).
The figures are in docs/benchmarks.md, "Memory of the full-size update". About 1-2 minutes a
row on a 2-core CPU from a cold compilation cache.
"""

import argparse
import json
import os

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
# Capacities of the common accelerators, bytes (GB as their makers count them).
DEVICE_BYTES = {"80 GB": 80e9, "141 GB": 141e9}


def measure(name: str, per_device_batch: int) -> dict:
  """The memory figures of configs/<name>.py at `per_device_batch` on one device."""
  from bigbigan import benchmark  # pylint: disable=g-import-not-at-top
  from bigbigan.config_files import load_config  # pylint: disable=g-import-not-at-top
  config = load_config(os.path.join(CONFIGS, f"{name}.py"))
  config.batch_size, config.remat = per_device_batch, "none"
  figures = benchmark.memory_analysis(config)
  config.remat = "blocks"
  remat_saved = benchmark.saved_activation_bytes(config, per_device_batch)
  freed = sum(figures["saved_activation_bytes"].values()) - sum(remat_saved.values())
  return {"config": name, **figures, "saved_activation_bytes_remat": remat_saved,
          "total_bytes_remat": figures["total_bytes"] - freed}


def table(rows: list[dict]) -> str:
  gib = lambda b: f"{b / 2**30:.1f}"
  from bigbigan.memory_plan import fits  # pylint: disable=g-import-not-at-top
  mark = lambda b: " / ".join("yes" if fits(b, size) else "no" for size in DEVICE_BYTES.values())
  lines = ["| config | per-device batch | XLA peak, remat none (GiB) | fits 80 / 141 GB | "
           "saved activations none / blocks (GiB) | peak, remat blocks (GiB) | "
           "fits 80 / 141 GB |", "| --- | --- | --- | --- | --- | --- | --- |"]
  for row in rows:
    saved = sum(row["saved_activation_bytes"].values())
    saved_remat = sum(row["saved_activation_bytes_remat"].values())
    lines.append(f"| `{row['config']}` | {row['per_device_batch']} | {gib(row['total_bytes'])} | "
                 f"{mark(row['total_bytes'])} | {gib(saved)} / {gib(saved_remat)} | "
                 f"{gib(row['total_bytes_remat'])} | {mark(row['total_bytes_remat'])} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", nargs="+", default=["resnet50", "revnet4x"])
  parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256])
  parser.add_argument("--json", default="", help="Also write every figure to this file.")
  args = parser.parse_args()
  rows = []
  for name in args.configs:
    for batch in args.batches:
      rows.append(measure(name, batch))
      print(f"{name} at {batch}: {rows[-1]['total_gib']:.1f} GiB "
            f"(compiled in {rows[-1]['compile_seconds']:.0f} s)", flush=True)
  print(table(rows))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
