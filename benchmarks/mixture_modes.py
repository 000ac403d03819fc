"""Mode coverage on the 25-Gaussian mixture over many seeds: BiGAN, ALI and the GAN baseline.

    python benchmarks/mixture_modes.py --seeds 10 [--variants bigan,ali,gan] [--jobs 2]

Trains configs/mixture.py (one fixed config per variant; only the seed changes) and prints,
per run and averaged over seeds, the evaluation metrics of the final step and the wall time.
With --jobs N, N runs go in parallel in N processes, each pinned to a CPU core of its own.
The ALI paper's reference: ALI 13.4 +- 5.8 modes, GAN 10.4 +- 9.2 (10 runs each).
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import pathlib
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
COLUMNS = ("modes_covered", "high_quality_modes", "high_quality_fraction",
           "reconstruction_error")


def _pin_worker(cores) -> None:
  """Pool initializer: this worker takes a core of its own, and XLA one thread, for good."""
  os.sched_setaffinity(0, {cores.get()})
  os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"  # Before jax loads.


def run(variant: str, seed: int, workdir: str, total_steps) -> list[float]:
  """Trains one run and returns its final evaluation metrics (COLUMNS) and wall seconds."""
  if os.path.exists(workdir):
    raise SystemExit(f"{workdir} exists: it would resume an old run; use a new --workdir")
  from absl import logging  # pylint: disable=g-import-not-at-top
  from bigbigan import train  # pylint: disable=g-import-not-at-top
  from bigbigan.config_files import load_config  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  config = load_config(f"{REPO}/configs/mixture.py:{variant}")
  config.seed = seed
  if total_steps:
    config.total_steps = total_steps
  start = time.time()
  train.train_and_evaluate(config, workdir)
  seconds = time.time() - start
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    final = [json.loads(line) for line in f][-1]
  return [final.get(c, float("nan")) for c in COLUMNS] + [seconds]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=10, help="Runs per variant (seeds 0..N-1).")
  parser.add_argument("--variants", default="bigan,ali,gan")
  parser.add_argument("--jobs", type=int, default=1, help="Parallel runs, one core each.")
  parser.add_argument("--workdir", default=None, help="Keeps each run's outputs here.")
  parser.add_argument("--total_steps", type=int, default=None, help="Override (quick checks).")
  args = parser.parse_args()

  root = args.workdir or tempfile.mkdtemp(prefix="mixture_modes_")
  runs = [(variant, seed) for variant in args.variants.split(",") for seed in range(args.seeds)]
  print(f"{'variant':8} {'seed':>4} " + " ".join(f"{c:>22}" for c in COLUMNS) +
        f" {'seconds':>8}", flush=True)
  rows = {}
  context = multiprocessing.get_context("spawn")
  pinning = {}
  if args.jobs > 1:
    cores = context.Queue()
    for core in sorted(os.sched_getaffinity(0))[:args.jobs]:
      cores.put(core)
    pinning = dict(initializer=_pin_worker, initargs=(cores,))
  with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context, **pinning) as pool:
    futures = {
        pool.submit(run, variant, seed, os.path.join(root, f"{variant}_seed{seed}"),
                    args.total_steps): (variant, seed)
        for variant, seed in runs}
    for future in concurrent.futures.as_completed(futures):
      variant, seed = futures[future]
      row = future.result()
      rows.setdefault(variant, []).append(row)
      print(f"{variant:8} {seed:>4} " + " ".join(f"{v:>22.4g}" for v in row), flush=True)

  print("\nMean +- std over seeds (min-max of modes_covered):")
  for variant in args.variants.split(","):
    table = np.asarray(rows[variant], np.float64)
    cells = [f"{c} {np.mean(table[:, i]):.4g} +- {np.std(table[:, i]):.2g}"
             for i, c in enumerate(COLUMNS)]
    print(f"{variant:8} " + " | ".join(cells) +
          f" | modes {table[:, 0].min():.0f}-{table[:, 0].max():.0f}"
          f" | {np.mean(table[:, -1]):.0f} s/run")


if __name__ == "__main__":
  main()
