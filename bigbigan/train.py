"""The trainer: init or restore, iterate, log, evaluate, checkpoint; one loop for every config.

    state = train_and_evaluate(config, workdir)

The model family (families/) supplies the networks, the initial state, the update, the
training data and the predict functions; the evaluators that `config.eval_metrics` names
(evaluation/registry.py) run at their cadence with those predict functions. The trainer
itself knows no family and no dataset.

Writes the run's outputs into `workdir` (local or gs://, through etils' epath): config.json,
metrics.jsonl, checkpoints/ (or `config.checkpoint_dir`), PNGs per evaluation and
TensorBoard events.

Fine-tuning: with `config.init_from` set to a bundle (`python -m bigbigan.export`), a run
whose checkpoint directory holds no checkpoint starts from the bundle's G and E (and D, if
exported) with fresh optimizer state at step 0 (fine_tuning.py):

    python -m bigbigan.main --config=configs/bigbigan_base.py:tiny \
        --config.init_from=/tmp/bundles/mnist --workdir=/tmp/finetune

The bundle is read and checked against the config before anything is written, so one that
does not fit is refused with the workdir untouched. A run with checkpoints resumes from
them and ignores `init_from` (its log says so).
"""

import json
from typing import Iterator, Optional, Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from clu import periodic_actions
from etils import epath
from jax.sharding import Mesh

from bigbigan import checkpointing
from bigbigan import config_files
from bigbigan import families
from bigbigan import fine_tuning
from bigbigan import files
from bigbigan import sharding
from bigbigan.data.splits import validate_splits
from bigbigan.errors import ConfigError, NonFiniteLossError
from bigbigan.evaluation.context import EvaluationContext
from bigbigan.evaluation.registry import Evaluation
from bigbigan.metric_logging import create_writer, write_evaluation
from bigbigan.state import TrainState


def _first_non_finite(history: Sequence[tuple[int, dict]]) -> Optional[tuple[int, str]]:
  """The first step of the step-ordered `history` with a non-finite metric, and its
  non-finite metrics as "name=value" phrases, the losses first."""
  for step, metrics in history:
    bad = [name for name, value in metrics.items() if not np.isfinite(value)]
    if bad:
      bad.sort(key=lambda name: ("loss" not in name, name))
      return step, ", ".join(f"{name}={float(metrics[name])}" for name in bad)
  return None


def _mean_metrics(history: Sequence[tuple[int, dict]]) -> dict[str, float]:
  names = history[0][1].keys()
  return {name: float(np.mean([m[name] for _, m in history])) for name in names}


CONFIG_FILE = "config.json"


def _warn_about_changed_fields(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Logs the fields that differ from the config the run was started (or last resumed) with.

  Changing some fields on resume is legitimate (total_steps to train longer, log cadence),
  so this warns rather than refuses; fields that change the state's shapes are refused by
  the checkpoint check.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return
  before = config_files.flatten(json.loads(path.read_text()))
  now = config_files.flatten(json.loads(config.to_json_best_effort()))
  changed = [f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
             for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
  if changed:
    logging.warning("Resuming with changed config fields: %s", "; ".join(changed))


def _has_checkpoints(directory: str) -> bool:
  path = epath.Path(directory)
  return path.exists() and any(p.name.isdigit() for p in path.iterdir())


def _refuse_a_forgotten_checkpoint_dir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises ConfigError when the config's checkpoint directory holds no checkpoint but the
  one that the workdir's config.json names does: a resume without its
  --config.checkpoint_dir would otherwise start again from step 0."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return
  recorded = json.loads(path.read_text()).get("checkpoint_dir", "")
  earlier = checkpointing.checkpoint_directory(workdir, recorded)
  now = checkpointing.checkpoint_directory(workdir, config.get("checkpoint_dir", ""))
  if earlier != now and _has_checkpoints(earlier) and not _has_checkpoints(now):
    raise ConfigError(
        f"config.checkpoint_dir={config.get('checkpoint_dir', '')!r} holds no checkpoint, "
        f"but this workdir's run keeps them in {earlier} (its config.json): pass "
        f"--config.checkpoint_dir={recorded!r} to resume it, or use another --workdir")


def _make_workdir(workdir: str) -> None:
  """Creates `workdir` (and its parents) if missing.

  Raises:
    ConfigError: it is a file, or it cannot be created (a parent is a file, no permission).
  """
  path = epath.Path(workdir)
  if path.exists() and not path.is_dir():
    raise ConfigError(f"--workdir={workdir} is a file, not a directory: pass a directory "
                      "(a new one for a new run, or a run's own to resume it)")
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise ConfigError(f"--workdir={workdir} cannot be created ({error.strerror or error}): "
                      "pass a directory you can write to") from error


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  # Whole or not at all: bigbigan.evaluate and export rebuild the run from this file.
  files.write_whole(epath.Path(workdir) / CONFIG_FILE,
                    config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


# How long processes wait for each other's compilation of the update.
COMPILE_BARRIER_TIMEOUT_MS = 30 * 60 * 1000


def _compile(train_step, state: TrainState, batch):
  """The update compiled for the state and batch shapes, once every process has it.

  Processes compile at different speeds; the barrier keeps a slow compile on one host from
  timing out another's first collective (gloo's connection set-up on CPUs waits 30 s).
  """
  compiled = train_step.lower(state, batch).compile()
  # The coordination service's barrier (not a device collective, which would itself wait
  # on gloo); a no-op for one process.
  ocp.multihost.get_barrier_sync_fn()(key=f"bigbigan_update_compiled_{int(state.step)}",
                                      timeout_ms=COMPILE_BARRIER_TIMEOUT_MS)
  return compiled


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices: Optional[Sequence[jax.Device]] = None,
                       train_batches: Optional[Iterator[np.ndarray]] = None) -> TrainState:
  """Trains (resuming from the latest checkpoint in `workdir`) and returns the final state.

  Args:
    config: the experiment config (see configs/).
    workdir: where metrics, figures and checkpoints (unless config.checkpoint_dir names
      another directory) go: a local path or a URL such as gs://bucket/run; created if needed.
    devices: the devices of the mesh; all devices by default.
    train_batches: replaces the config's training data iterator (this process's rows of
      each global batch, from the resumed step on; (x, labels) pairs for a conditional
      model); for tests and custom data.

  Raises:
    ConfigError, CheckpointError, BundleError, NonFiniteLossError: with a one-line message
      and fix.
  """
  # ---- Mesh and config checks: before anything is built or written. ----
  mesh = sharding.make_mesh(devices)
  families.validate_config(config, num_devices=mesh.devices.size,
                           num_processes=jax.process_count())
  validate_splits(config)
  _refuse_a_forgotten_checkpoint_dir(config, workdir)
  # A fine-tuning run's bundle, read and checked now so that one that does not fit the
  # config is refused before the workdir is created or written; a run that already has
  # checkpoints resumes from them instead, and never reads it.
  bundle = None
  if fine_tuning.requested(config) and not _has_checkpoints(
      checkpointing.checkpoint_directory(workdir, config.get("checkpoint_dir", ""))):
    bundle = fine_tuning.read_checked(config)
  if jax.process_index() == 0:  # The other processes write nothing to the workdir.
    _make_workdir(workdir)
  # Listen for SIGTERM from the start; the flag is acted upon after the next step.
  sigterm = checkpointing.SigtermFlag()
  checkpointer = checkpointing.Checkpointer.for_config(workdir, config)
  try:
    return _train(config, workdir, mesh, checkpointer, sigterm, train_batches, bundle)
  finally:
    checkpointer.close()
    sigterm.restore()


def _train(config: ml_collections.ConfigDict, workdir: str, mesh: Mesh,
           checkpointer: checkpointing.Checkpointer, sigterm: checkpointing.SigtermFlag,
           train_batches: Optional[Iterator[np.ndarray]],
           bundle: Optional[fine_tuning.Source]) -> TrainState:
  """The body of train_and_evaluate, which owns the checkpointer and the SIGTERM flag;
  `bundle`: the checked bundle of config.init_from, if the run starts from one."""
  # ---- Data and model. ----
  family = families.of(config)
  data = family.make_data(config, mesh)
  networks = family.build_networks(config)
  train_step = family.make_update(config, networks, mesh)

  # ---- State: shapes first, then restore or a jitted init that lands on the devices. ----
  # The state's layout (sharding.state_shardings) is this mesh's, whatever mesh wrote the
  # checkpoint: orbax reads each device's slice, so a run resumes on any device count.
  rng = jax.random.PRNGKey(config.seed)
  init, abstract_state = families.jitted_initializer(config, networks, mesh)
  # What evaluation runs and checkpoints keep: for BigBiGAN, the EMA networks' standing
  # BatchNorm statistics of the step.
  for_inference = data.make_inference_state_fn(networks)
  layout = jax.tree.map(lambda leaf: leaf.sharding, abstract_state)
  state = checkpointer.restore_latest(abstract_state)
  init_from = fine_tuning.requested(config)
  if state is None and init_from:
    if bundle is None:  # Step directories without a finished checkpoint: none to resume.
      bundle = fine_tuning.read_checked(config)
    state = fine_tuning.initial_state(family.state_initializer(config, networks), bundle,
                                      rng, layout)
    logging.info("%s", fine_tuning.describe(bundle))
  elif state is None:
    state = init(rng)
  else:
    logging.info("Resumed from %s", checkpointer.path(checkpointer.latest_step()))
    # A preempted run saves before it refreshes the standing statistics (below): they are
    # refreshed here, a function of the EMA networks and the data seed alone, so a
    # checkpoint restored from either kind of save goes on the same.
    state = for_inference(state)
    if init_from:
      logging.warning("%s has checkpoints: resuming from step %d; config.init_from=%s is "
                      "ignored", checkpointer.directory, checkpointer.latest_step(), init_from)
    _warn_about_changed_fields(config, workdir)
  start_step = int(state.step)
  if jax.process_index() == 0:
    _write_config(config, workdir)

  # ---- Evaluation and logging. ----
  predict = family.make_predict_fns(config, networks, mesh)
  evaluation = Evaluation(EvaluationContext(
      config, mesh, workdir, data,
      families.initial_state_for_evaluation(config, networks, mesh, for_inference)))
  if train_batches is None:
    train_batches = data.train_batches(start_step)
  batches = sharding.prefetch_to_mesh(train_batches, mesh, data.batch_axis,
                                      size=sharding.DEVICE_PREFETCH)
  writer = create_writer(workdir, start_step)
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=config.total_steps, writer=writer, every_steps=config.log_every_steps,
      every_secs=None)
  last_good = checkpointer.latest_step()

  # ---- The loop. ----
  history: list[tuple[int, dict]] = []  # Device metrics since the last log, fetched lazily.
  step = start_step
  compiled_step = None
  try:
    while step < config.total_steps:
      batch = next(batches)
      if compiled_step is None:
        compiled_step = _compile(train_step, state, batch)
      state, metrics = compiled_step(state, batch)
      step += 1
      history.append((step, metrics))
      if jax.process_index() == 0:
        report_progress(step)
      preempted = bool(sigterm) or checkpointer.reached_preemption(step)
      done = step == config.total_steps or preempted
      log_now = step % config.log_every_steps == 0 or done
      # A preempted run saves first and skips evaluation: the grace period is short. The
      # last step runs every evaluator; the others run those due (their own cadence).
      due = evaluation.names if done else evaluation.due_names(step)
      evaluate_now = not preempted and bool(due)
      save_now = step % config.checkpoint_every_steps == 0 or done

      if log_now or save_now or evaluate_now:
        # Only finite states are logged as good, evaluated or saved: the metrics include the
        # gradient norms, so a NaN in the parameters or the update never reaches a checkpoint.
        history = jax.device_get(history)
        bad = _first_non_finite(history)
        if bad:
          fix = ("start again with a lower learning rate, or check the input data"
                 if last_good is None else
                 f"last good checkpoint: {checkpointer.path(last_good)} (resume from it "
                 "with a lower learning rate, or check the input data)")
          raise NonFiniteLossError(f"non-finite {bad[1]} at step {bad[0]}; {fix}")
      if log_now:
        writer.write_scalars(step, _mean_metrics(history))
        history = []
      # A preempted run saves at once: the standing statistics (a fresh input stream and
      # standing_stats_batches forwards of G and E) wait for the restore, or the evaluation.
      if evaluate_now or (save_now and not preempted):
        state = for_inference(state)
      results = None
      if evaluate_now:
        results = evaluation.run(predict, state, step, due)
        write_evaluation(writer, step, results)
        # A step whose evaluation found the selection metric is saved with it, so that the
        # best one can be kept (other evaluators' steps are not saved for their sake).
        save_now = save_now or checkpointer.selection_metric in results
      if save_now:
        checkpointer.save(step, state, metrics=results)
        last_good = step
      if log_now:
        writer.flush()
      if preempted:
        logging.warning("Preempted: saved %s; rerun the same command to resume.",
                        checkpointer.path(step))
        break
  finally:
    writer.close()
  return state
