"""One prepared run for an accelerator's first minutes: the full-size BigBiGAN update timed
at its planned batches, and a loaded bundle's encode throughput, into one JSON file.

    python benchmarks/accelerator_suite.py --out=/tmp/suite --peak_tflops=989  # an H200
    python benchmarks/accelerator_suite.py --out=/tmp/suite --tiny             # a CPU dry run

What it measures (the updates run over every local device, at per-device batches):
1. `configs/resnet50.py` and `configs/revnet4x.py` in bf16, each at the largest per-device
   batch that the memory table predicts to fit this device (`PREDICTED_PEAK_GIB`, from
   benchmarks/memory_table.py) and at half of it. The four updates compile at once, in
   threads (XLA's compilers run side by side; `compile_seconds` is each one's wall-clock
   among the others); then `bigbigan.benchmark.benchmark` times each: median step,
   images/s, XLA's FLOPs and MFU against `--peak_tflops`, and the host-fed iteration.
2. For each encoder, a bundle exported from an initialised full-size state (no training)
   and loaded by `bigbigan.load`: `encode` of 256 uint8 images, the first call (compilation
   included) and the median of 5.

The JSON (`<out>/accelerator_suite.json`) is rewritten after every measurement, so a run
cut short keeps what it measured; a measurement that fails (out of memory) records its
error and the suite goes on. It imports no TensorFlow, TFDS or clu: docs/benchmarks.md
("The accelerator suite") gives the wheels to carry and the command. `--tiny` runs the
same steps on the tiny configs (`:tiny`, bf16) in a couple of minutes on a CPU: it checks
that every measurement runs and is written, so it compiles one update per encoder (per-device
batch 8, no half) and times encode once, not 5 times.
"""

import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import tempfile
import time
import traceback

# JAX's GPU client takes 75% of the device's memory by default; the largest batches need
# more. Set before JAX starts.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
CLIENT_MEMORY_FRACTION = float(os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"])

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
# An accelerator host runs a copy of the working tree, where bigbigan is not installed.
sys.path.insert(0, REPO)
ENCODERS = ("resnet50", "revnet4x")
# XLA's predicted peak of one device's update (GiB), bf16, remat "none", by per-device
# batch: the table of docs/benchmarks.md ("Memory of the full-size update"), made by
# `python benchmarks/memory_table.py` on a CPU.
PREDICTED_PEAK_GIB = {
    "resnet50": {32: 20.2, 64: 35.2, 128: 65.0, 256: 124.5},
    "revnet4x": {32: 30.4, 64: 54.1, 128: 101.2, 256: 195.5},
}
TINY_BATCHES = (8,)  # The dry run: one update per encoder, the "best" role alone.
ENCODE_BATCH = 256
ENCODE_REPEATS = 5


def planned_batches(name: str, device_bytes: float) -> tuple[int, int]:
  """(the largest per-device batch predicted to fit `device_bytes`, half of it)."""
  from bigbigan.memory_plan import fits  # pylint: disable=g-import-not-at-top
  fitting = [batch for batch, gib in PREDICTED_PEAK_GIB[name].items()
             if fits(gib * 2**30, device_bytes)]
  if not fitting:
    raise SystemExit(f"accelerator_suite: no planned batch of {name} fits "
                     f"{device_bytes / 1e9:.0f} GB: pass --batches {name}:N")
  best = max(fitting)
  return best, best // 2


def _config(name: str, tiny: bool, per_device_batch: int = 0):
  from bigbigan.config_files import load_config  # pylint: disable=g-import-not-at-top
  config = load_config(os.path.join(CONFIGS, f"{name}.py") + (":tiny" if tiny else ""))
  config.compute_dtype = "bfloat16"
  if per_device_batch:
    config.batch_size = per_device_batch * jax.device_count()
  return config


def _device_bytes(flag_gb: float) -> float:
  if flag_gb:
    return flag_gb * 1e9
  stats = jax.local_devices()[0].memory_stats() or {}
  if "bytes_limit" not in stats:
    raise SystemExit("accelerator_suite: this device reports no memory size: pass "
                     "--device_memory_gb, or --batches")
  # bytes_limit is the client's share of the device (XLA_PYTHON_CLIENT_MEM_FRACTION).
  return stats["bytes_limit"] / CLIENT_MEMORY_FRACTION


class Report:
  """The suite's JSON, rewritten whole after every measurement."""

  def __init__(self, path: str, header: dict):
    self.path, self.data = path, {**header, "updates": [], "encode": []}
    self.start = time.perf_counter()
    self.write()

  def add(self, section: str, entry: dict) -> None:
    self.data[section].append(entry)
    self.write()
    print(json.dumps(entry), flush=True)

  def write(self) -> None:
    self.data["wall_seconds"] = round(time.perf_counter() - self.start, 1)
    with open(self.path + ".tmp", "w") as f:
      json.dump(self.data, f, indent=2)
    os.replace(self.path + ".tmp", self.path)


def _failure(error: BaseException) -> dict:
  return {"error": f"{type(error).__name__}: {error}"[:2000],
          "traceback": traceback.format_exc()[-4000:]}


def time_updates(plans: list[dict], tiny: bool, steps: int, peak_tflops, report: Report):
  from bigbigan import benchmark, sharding  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  configs = [_config(plan["config"], tiny, plan["per_device_batch"]) for plan in plans]
  with concurrent.futures.ThreadPoolExecutor(len(plans)) as pool:
    compiles = [pool.submit(benchmark.compile_update, config, mesh) for config in configs]
    for plan, config, future in zip(plans, configs, compiles):
      try:
        figures = benchmark.benchmark(config, steps, peak_tflops, precompiled=future.result())
        # The process's peak so far: the larger batch of each config runs first.
        peak = (jax.local_devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
        report.add("updates", {**plan, **figures,
                               "device_peak_gib_so_far": peak and peak / 2**30})
      except Exception as error:  # pylint: disable=broad-except
        report.add("updates", {**plan, **_failure(error)})


def time_encode(name: str, tiny: bool, report: Report) -> None:
  import bigbigan  # pylint: disable=g-import-not-at-top
  from bigbigan import export, families, sharding  # pylint: disable=g-import-not-at-top
  entry = {"config": name, "batch": ENCODE_BATCH}
  try:
    config = _config(name, tiny)
    mesh = sharding.make_mesh(jax.local_devices()[:1])
    state, _ = families.create_state_and_update(config, mesh)
    with tempfile.TemporaryDirectory() as directory:
      path = os.path.join(directory, "bundle")
      manifest = export.export_state(config, state, 0, "an initialised state", path)
      del state
      model = bigbigan.load(path, max_batch_size=ENCODE_BATCH)
      images = np.random.default_rng(0).integers(
          0, 256, (ENCODE_BATCH, model.encoder_resolution, model.encoder_resolution, 3),
          dtype=np.uint8)
      times = []
      # A dry run (--tiny) checks that the measurement works, once: its figures are a CPU's.
      for _ in range((1 if tiny else ENCODE_REPEATS) + 1):
        start = time.perf_counter()
        model.encode(images)
        times.append(time.perf_counter() - start)
    median = statistics.median(times[1:])
    entry.update({"encoder_parameters": manifest["networks"]["encoder"]["parameters"],
                  "resolution": model.encoder_resolution,
                  "first_call_seconds": times[0], "median_seconds": median,
                  "images_per_second": ENCODE_BATCH / median})
  except Exception as error:  # pylint: disable=broad-except
    entry.update(_failure(error))
  report.add("encode", entry)


def summary(data: dict) -> str:
  """The report as two Markdown tables (updates, then encode)."""
  number = lambda value, fmt: "-" if value is None else format(value, fmt)
  lines = [f"{data['device']} x {data['devices']}, jax {data['jax_version']}, "
           f"{data['wall_seconds']:.0f} s in all", "",
           "| config | batch / device | predicted peak (GiB) | device peak (GiB) | "
           "compile (s) | median step (s) | images/s | MFU |", "| --- " * 8 + "|"]
  for u in data["updates"]:
    head = f"| `{u['config']}` | {u['per_device_batch']} ({u['role']}) "
    if "error" in u:
      lines.append(head + f"| {u['error'][:80]} |" + " |" * 6)
      continue
    lines.append(head + f"| {number(u['predicted_peak_gib'], '.1f')} | "
                 f"{number(u['device_peak_gib_so_far'], '.1f')} | {u['compile_seconds']:.0f} | "
                 f"{u['median_step_seconds']:.3f} | {u['images_per_second']:,.0f} | "
                 f"{number(u['mfu'], '.1%')} |")
  lines += ["", "| bundle | encode batch | E parameters | first call (s) | median (s) | "
            "images/s |", "| --- " * 6 + "|"]
  for e in data["encode"]:
    if "error" in e:
      lines.append(f"| `{e['config']}` | {e['batch']} | {e['error'][:80]} | | | |")
      continue
    lines.append(f"| `{e['config']}` | {e['batch']} | {e['encoder_parameters']:,} | "
                 f"{e['first_call_seconds']:.2f} | {e['median_seconds']:.3f} | "
                 f"{e['images_per_second']:,.0f} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="Directory of accelerator_suite.json.")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="Peak bf16 TFLOP/s of one device, for MFU (H100/H200 SXM: 989).")
  parser.add_argument("--tiny", action="store_true", help="The tiny configs: a CPU dry run.")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--device_memory_gb", type=float, default=0.0,
                      help="The device's memory, if it does not report it.")
  parser.add_argument("--batches", nargs="*", default=[],
                      help="Planned batches to override, e.g. resnet50:64 (and half of it).")
  args = parser.parse_args()

  overrides = dict(item.split(":") for item in args.batches)
  plans = []
  for name in ENCODERS:
    if args.tiny:
      batches = TINY_BATCHES
    elif name in overrides:
      batches = (int(overrides[name]), int(overrides[name]) // 2)
    else:
      batches = planned_batches(name, _device_bytes(args.device_memory_gb))
    for role, batch in zip(("best", "half"), batches):
      plans.append({"config": name, "role": role, "per_device_batch": batch,
                    "predicted_peak_gib": None if args.tiny else
                    PREDICTED_PEAK_GIB[name].get(batch)})

  os.makedirs(args.out, exist_ok=True)
  device = jax.local_devices()[0]
  report = Report(os.path.join(args.out, "accelerator_suite.json"), {
      "device": device.device_kind, "devices": jax.device_count(),
      "jax_version": jax.__version__, "tiny": args.tiny, "peak_tflops": args.peak_tflops,
      "device_bytes_limit": (device.memory_stats() or {}).get("bytes_limit"),
      "plans": plans})
  time_updates(plans, args.tiny, args.steps, args.peak_tflops, report)
  for name in ENCODERS:
    time_encode(name, args.tiny, report)
  report.write()
  print(summary(report.data))
  print(f"wrote {report.path}", file=sys.stderr)


if __name__ == "__main__":
  main()
