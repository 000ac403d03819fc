"""Mode coverage on the 25-Gaussian mixture over many seeds: BiGAN, ALI and the GAN baseline.

    python benchmarks/mixture_modes.py --seeds 10 [--variants bigan,ali,gan] [--workdir DIR]

Trains configs/mixture.py (one fixed config per variant; only the seed changes) and prints,
per run and averaged over seeds, the evaluation metrics of the final step and the wall time.
The ALI paper's reference: ALI 13.4 +- 5.8 modes, GAN 10.4 +- 9.2 (10 runs each).
"""

import argparse
import importlib.util
import json
import os
import pathlib
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
COLUMNS = ("modes_covered", "high_quality_modes", "high_quality_fraction",
           "reconstruction_error")


def load_config(variant: str):
  spec = importlib.util.spec_from_file_location("mixture", REPO / "configs" / "mixture.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def final_metrics(workdir: str) -> dict:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f][-1]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=10, help="Runs per variant (seeds 0..N-1).")
  parser.add_argument("--variants", default="bigan,ali,gan")
  parser.add_argument("--workdir", default=None, help="Keeps each run's outputs here.")
  parser.add_argument("--total_steps", type=int, default=None, help="Override (quick checks).")
  args = parser.parse_args()

  # Imported after argument parsing so --help is instant.
  from absl import logging  # pylint: disable=g-import-not-at-top
  from bigbigan import train  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)

  root = args.workdir or tempfile.mkdtemp(prefix="mixture_modes_")
  header = f"{'variant':8} {'seed':>4} " + " ".join(f"{c:>22}" for c in COLUMNS) + \
      f" {'seconds':>8}"
  print(header, flush=True)
  summary = {}
  for variant in args.variants.split(","):
    rows = []
    for seed in range(args.seeds):
      config = load_config(variant)
      config.seed = seed
      if args.total_steps:
        config.total_steps = args.total_steps
      workdir = os.path.join(root, f"{variant}_seed{seed}")
      start = time.time()
      train.train_and_evaluate(config, workdir)
      seconds = time.time() - start
      metrics = final_metrics(workdir)
      row = [metrics.get(c, float("nan")) for c in COLUMNS] + [seconds]
      rows.append(row)
      print(f"{variant:8} {seed:>4} " + " ".join(f"{v:>22.4g}" for v in row), flush=True)
    summary[variant] = np.asarray(rows, np.float64)

  print("\nMean +- std over seeds (min-max of modes_covered):")
  for variant, rows in summary.items():
    cells = [f"{c} {np.mean(rows[:, i]):.4g} +- {np.std(rows[:, i]):.2g}"
             for i, c in enumerate(COLUMNS)]
    print(f"{variant:8} " + " | ".join(cells) +
          f" | modes {rows[:, 0].min():.0f}-{rows[:, 0].max():.0f}"
          f" | {np.mean(rows[:, -1]):.0f} s/run")


if __name__ == "__main__":
  main()
