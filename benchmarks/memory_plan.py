"""The memory plan: for the full-size configs (bf16), the largest per-device batch that fits
each device kind with remat "none" and "blocks", and the gradient accumulation that the
paper's batch of 2048 needs on a TPU v4-128, a v5e-256 and 8 x H100.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/memory_plan.py \
        [--configs resnet50 revnet4x] [--batches 16 64] [--check 32] [--json=plan.json]

For each configs/<name>.py, compiles the accelerator's update program from shapes on this
machine's devices (8 simulated CPUs: the state split over 8) at the per-device batches
`--batches` (`bigbigan.benchmark.memory_analysis`), and takes the predicted peak
(`memory_plan.predicted_peak_bytes`: XLA's, less what remat frees) as a line in the
per-device batch: the activations grow with the rows, the state and weights do not. The line
is checked against a compile at `--check`. For a setup of N devices, the state's share is
moved from 8 devices' split to N's (`memory_plan.per_device_state_bytes`), and with
gradient accumulation a float32 copy of the params holds the summed gradients.

A device kind's largest batch is the largest multiple of 8 whose peak fits
(`memory_plan.fits`: 90% of the device). The 8 x H100 plan with remat "blocks" is then
compiled as it would run (batch 2048 on 8 devices with its accumulation) to check it. These are predictions from a
CPU compile; docs/benchmarks.md, "Memory plans", holds them. About 90 s a compile on a
2-core CPU.
"""

import argparse
import json
import os
import sys

import jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
PAPER_BATCH = 2048
REMATS = ("none", "blocks")
# (name, device kind, devices): the setups the plan gives accumulation for.
SETUPS = (("TPU v4-128", "v4", 64), ("TPU v5e-256", "v5e", 256), ("8 x H100", "gpu-80gb", 8))


def _config(name: str, batch_size: int, remat: str = "none", accumulation_steps: int = 1):
  from bigbigan.config_files import load_config  # pylint: disable=g-import-not-at-top
  config = load_config(os.path.join(REPO, "configs", f"{name}.py"))
  config.batch_size, config.remat = batch_size, remat
  config.accumulation_steps = accumulation_steps
  return config


def _state_shapes(config):
  from bigbigan import families  # pylint: disable=g-import-not-at-top
  family = families.of(config)
  return jax.eval_shape(family.state_initializer(config, family.build_networks(config)),
                        jax.random.PRNGKey(0))


def _peaks(name: str, per_device_batch: int, devices: int) -> dict:
  """{remat: predicted peak bytes} of one compile (remat "none"), with the activations that
  each remat frees taken off."""
  from bigbigan import benchmark, memory_plan  # pylint: disable=g-import-not-at-top
  analysis = benchmark.memory_analysis(_config(name, per_device_batch * devices))
  peaks = {}
  for remat in REMATS:
    saved = benchmark.saved_activation_bytes(_config(name, per_device_batch * devices, remat),
                                             per_device_batch)
    peaks[remat] = memory_plan.predicted_peak_bytes({**analysis,
                                                     "saved_activation_bytes": saved})
  print(f"  {name} at {per_device_batch} a device: " + ", ".join(
      f"{remat} {peak / 2**30:.2f} GiB" for remat, peak in peaks.items()) +
        f" (compiled in {analysis['compile_seconds']:.0f} s)", flush=True)
  return peaks


def plan(name: str, batches: tuple[int, int], check: int) -> dict:
  """The line of each remat's peak in the per-device batch on this machine's devices, its
  check, and what it predicts for every device kind and setup."""
  from bigbigan import memory_plan  # pylint: disable=g-import-not-at-top
  devices = jax.device_count()
  low, high = (_peaks(name, b, devices) for b in batches)
  checked = _peaks(name, check, devices)
  state = _state_shapes(_config(name, devices))
  here = memory_plan.per_device_state_bytes(state, devices)
  params = sum(leaf.size * 4 for leaf in jax.tree.leaves(
      [state.generator.params, state.encoder.params, state.discriminator.params]))
  lines, result = {}, {"config": name, "devices_compiled": devices, "kinds": {},
                       "setups": {}, "check": {}}
  for remat in REMATS:
    slope = (high[remat] - low[remat]) / (batches[1] - batches[0])
    intercept = low[remat] - slope * batches[0]
    lines[remat] = (slope, intercept)
    predicted = intercept + slope * check
    result["check"][remat] = {"per_device_batch": check, "compiled_bytes": checked[remat],
                              "line_bytes": predicted,
                              "error": predicted / checked[remat] - 1}

  def peak(remat: str, per_device_batch: float, setup_devices: int, accumulating: bool):
    slope, intercept = lines[remat]
    moved = memory_plan.per_device_state_bytes(state, setup_devices) - here
    return intercept + moved + slope * per_device_batch + (params if accumulating else 0)

  def largest(remat, memory, setup_devices, multiple, accumulating=False) -> int:
    slope, _ = lines[remat]
    room = memory_plan.MEMORY_HEADROOM * memory - peak(remat, 0, setup_devices, accumulating)
    return max(0, int(room // slope) // multiple * multiple)

  for kind, memory in memory_plan.DEVICE_MEMORY_BYTES.items():
    result["kinds"][kind] = {remat: largest(remat, memory, devices, 8) for remat in REMATS}
  for setup, kind, setup_devices in SETUPS:
    memory = memory_plan.DEVICE_MEMORY_BYTES[kind]
    per_device = PAPER_BATCH // setup_devices
    entry = {"kind": kind, "devices": setup_devices, "per_device_batch": per_device}
    for remat in REMATS:
      whole = largest(remat, memory, setup_devices, 1)
      steps = 1 if whole >= per_device else memory_plan.accumulation_steps(
          PAPER_BATCH, setup_devices, largest(remat, memory, setup_devices, 1, True))
      entry[remat] = {"accumulation_steps": steps,
                      "peak_bytes": peak(remat, per_device / steps, setup_devices, steps > 1)}
    result["setups"][setup] = entry
  return result


def _compile_setup(name: str, remat: str, steps: int) -> float:
  """The predicted peak of the paper's batch on this machine's devices with `steps`
  micro-batches, compiled."""
  from bigbigan import benchmark, memory_plan  # pylint: disable=g-import-not-at-top
  config = _config(name, PAPER_BATCH, remat, steps)
  analysis = benchmark.memory_analysis(config)
  return memory_plan.predicted_peak_bytes(analysis)


def tables(results: list[dict]) -> str:
  from bigbigan import memory_plan  # pylint: disable=g-import-not-at-top
  gib = lambda b: f"{b / 2**30:.1f}"  # noqa: E731
  kinds = list(memory_plan.DEVICE_MEMORY_BYTES)
  out = ["| config | remat | " + " | ".join(
      f"{kind} ({gib(memory_plan.DEVICE_MEMORY_BYTES[kind])} GiB)" for kind in kinds) + " |",
         "| --- | --- |" + " --- |" * len(kinds)]
  for result in results:
    for remat in REMATS:
      out.append(f"| `{result['config']}` | {remat} | " + " | ".join(
          str(result["kinds"][kind][remat]) for kind in kinds) + " |")
  out += ["", "| config | setup | per-device batch of 2048 | remat | accumulation_steps | "
          "predicted peak (GiB) |", "| --- | --- | --- | --- | --- | --- |"]
  for result in results:
    for setup, entry in result["setups"].items():
      for remat in REMATS:
        out.append(f"| `{result['config']}` | {setup} | {entry['per_device_batch']} | {remat} "
                   f"| {entry[remat]['accumulation_steps']} | "
                   f"{gib(entry[remat]['peak_bytes'])} |")
  out += ["", "| config | remat | check batch | line (GiB) | compiled (GiB) | error |",
          "| --- | --- | --- | --- | --- | --- |"]
  for result in results:
    for remat, check in result["check"].items():
      out.append(f"| `{result['config']}` | {remat} | {check['per_device_batch']} | "
                 f"{gib(check['line_bytes'])} | {gib(check['compiled_bytes'])} | "
                 f"{check['error']:+.1%} |")
  return "\n".join(out)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", nargs="+", default=["resnet50", "revnet4x"])
  parser.add_argument("--batches", type=int, nargs=2, default=[16, 64])
  parser.add_argument("--check", type=int, default=32)
  parser.add_argument("--json", default="", help="Also write every figure to this file.")
  args = parser.parse_args()
  results = [plan(name, tuple(args.batches), args.check) for name in args.configs]
  for result in results:  # The 8-device setup compiled as planned, where this machine has 8.
    setup = result["setups"]["8 x H100"]
    if jax.device_count() == setup["devices"]:
      for remat in REMATS[1:]:  # The plan's choice ("blocks"): a compile of ~90 s each.
        steps = setup[remat]["accumulation_steps"]
        compiled = _compile_setup(result["config"], remat, steps)
        setup[remat]["compiled_peak_bytes"] = compiled
        print(f"  {result['config']} 8 x H100, remat {remat}, {steps} micro-batches: planned "
              f"{setup[remat]['peak_bytes'] / 2**30:.2f} GiB, compiled "
              f"{compiled / 2**30:.2f} GiB", flush=True)
  print(tables(results))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
