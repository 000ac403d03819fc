"""A finished or running run's directory, read back: its config and its checkpoints.

    config = run_directory.load_run_config(workdir)            # workdir/config.json
    step, state, networks = run_directory.restore_run(config, workdir, step=None, mesh=mesh)
    # step: None for the latest, a number, or "best" (by the run's selection_metric)

`bigbigan.evaluate` and `bigbigan.export` start here. Paths go through etils' epath, so a
workdir on gs:// reads as a local one does; the checkpoints are where the run's config says
(`checkpoint_dir`, by default `<workdir>/checkpoints`).
"""

import json
from typing import Optional, Union

import ml_collections
from etils import epath
from jax.sharding import Mesh

from bigbigan import checkpointing, families
from bigbigan.errors import CheckpointError, ConfigError
from bigbigan.models.networks import Networks
from bigbigan.state import TrainState


# Fields that every config has (configs/*.py), with the value that a run's config.json
# written before the field existed means.
FIELD_DEFAULTS = {
    "checkpoint_dir": "",  # <workdir>/checkpoints.
    "eval_every_steps_per_metric": {},  # Every metric at eval_every_steps.
}


def config_from_dict(fields: dict) -> ml_collections.ConfigDict:
  """A ConfigDict from a config's JSON fields (JSON has lists where the config had tuples);
  a field of FIELD_DEFAULTS that `fields` lacks gets its default."""

  def tuples(value):
    if isinstance(value, dict):
      return {k: tuples(v) for k, v in value.items()}
    return tuple(value) if isinstance(value, list) else value

  return ml_collections.ConfigDict({**FIELD_DEFAULTS, **tuples(fields)})


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run wrote to `workdir`/config.json, as a ConfigDict."""
  path = epath.Path(workdir) / "config.json"
  if not path.exists():
    raise ConfigError(f"{path} not found: --workdir must be a run's directory "
                      "(python -m bigbigan.main writes config.json there)")
  config = config_from_dict(json.loads(path.read_text()))
  if "eval_metrics" not in config:
    # An MLP run written before its configs named their evaluators: every evaluator its
    # dataset allows (there is one per dataset).
    config.eval_metrics = families.of(config).eval_metrics(config)
  return config


BEST = "best"


def parse_step(value: Optional[str]) -> Union[int, str, None]:
  """A --step flag's value: None (the latest), "best", or a step number.

  Raises:
    ConfigError: anything else.
  """
  if value is None or value == BEST:
    return value
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f"--step={value}: pass a step number, or 'best' for the checkpoint "
                      "kept for its selection metric") from None


def restore_run(config: ml_collections.ConfigDict, workdir: str,
                step: Union[int, str, None], mesh: Mesh) -> tuple[int, TrainState, Networks]:
  """Restores `workdir`'s checkpoint `step` (None: the latest; "best": the best by the
  run's `selection_metric`), in the training state's layout on `mesh`.

  Returns:
    (step, the TrainState, the config's networks).

  Raises:
    CheckpointError: no (such) checkpoint, or one the config cannot read.
  """
  family = families.of(config)
  networks = family.build_networks(config)
  # The training state's own layout on this mesh: the evaluation's programs then compile
  # once for the restored state and the random-init reference alike.
  _, abstract_state = families.jitted_initializer(config, networks, mesh)
  checkpointer = checkpointing.Checkpointer.for_config(workdir, config)
  try:
    if step == BEST:
      step = checkpointer.best_step()
      if step is None:
        raise CheckpointError(
            f"no checkpoint in {checkpointer.directory} was saved with "
            f"{config.selection_metric!r}: evaluate during training (eval_metrics) or pass "
            "a step number")
    elif step is None:
      step = checkpointer.latest_step()
    if step is None:
      raise CheckpointError(f"no checkpoint in {checkpointer.directory}: train first "
                            "(python -m bigbigan.main)")
    state = checkpointer.restore(step, abstract_state)
  finally:
    checkpointer.close()
  return step, state, networks


def final_evaluation(workdir: str) -> tuple[int, dict]:
  """The last logged step of the run in `workdir` and its merged metrics.jsonl records."""
  path = epath.Path(workdir) / "metrics.jsonl"
  records = [json.loads(line) for line in path.read_text().splitlines()] if (
      path.exists()) else []
  if not records:
    return 0, {}
  step = max(record["step"] for record in records)
  merged = {}
  for record in records:
    if record["step"] == step and "evaluation" not in record:  # Training's own lines.
      merged.update(record)
  return step, merged


def describe_finished_run(workdir: str) -> str:
  """What a finished run measured and where its files are, for the end of `bigbigan.main`.

  The metrics of the last step that have a `*_random_init` reference (the encoder's probe
  and 1-NN, BigBiGAN's), learned beside random initialisation, and the run's files.
  """
  step, metrics = final_evaluation(workdir)
  lines = [f"Finished at step {step:,}."]
  compared = sorted(name for name in metrics if f"{name}_random_init" in metrics)
  if compared:
    lines.append("The EMA networks (standing statistics) against their random initialisation:"
                 if "fid" in compared else
                 "The EMA encoder (standing statistics) against its random initialisation:")
    width = max(len(name) for name in compared)
    lines.append(f"  {'metric':<{width}}  learned  random init")
    # Accuracies are fractions, shown as percentages; FID is a distance.
    def cell(name):
      return f"{metrics[name]:7.2f}" if name.startswith("fid") else f"{metrics[name]:7.2%}"
    for name in compared:
      lines.append(f"  {name:<{width}}  {cell(name)}  {cell(name + '_random_init')}")
  directory = epath.Path(workdir)
  figures = sorted(p.name for p in directory.glob(f"*{step:07d}.png")) or sorted(
      p.name for p in directory.glob(f"*_{step}.png"))
  checkpoints = load_run_config(workdir).get("checkpoint_dir", "") or "checkpoints/"
  lines.append(f"Run files in {workdir}: config.json, metrics.jsonl, {checkpoints}"
               + "".join(f", {name}" for name in figures)
               + f"; TensorBoard: tensorboard --logdir {workdir}")
  return "\n".join(lines)
