"""Orbax checkpoints of the whole TrainState: resume from the latest, keep the last N and the
best by a selection metric, save on preemption, and refuse, with a clear message, a
checkpoint that does not fit the config.

The paper reports each model at its best checkpoint (by train_val accuracy, or FID for the
GAN rows). With `config.selection_metric` set, each save at an evaluation step records that
metric in the checkpoint (orbax's metrics item), and orbax keeps the best checkpoint by it
(`config.selection_mode` "max" or "min") beside the latest `keep_checkpoints`, so a late
collapse cannot prune it; `best_step()` names it, across restarts.

A checkpoint is only ever written by `save`; a failed restore raises before the trainer
writes anything, so an incompatible or corrupt checkpoint is left exactly as it was.
"""

import math
import os
import signal
import threading
from typing import Any, Mapping, Optional

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers

from bigbigan import files
from bigbigan.errors import CheckpointError


def _handler() -> ocp.PyTreeCheckpointHandler:
  """Orbax's pytree handler, with replica-parallel saving only across processes.

  Replica-parallel saving has each replica of a replicated array write a slice of it, which
  spreads the replicated leaves' writes over the hosts of a multi-process run. In one
  process every write is this host's anyway, and slicing each leaf on each device compiles a
  slice program per leaf shape and device at the first save (the tiny BigBiGAN state, 834
  leaves on 8 CPU devices: its first save took 14.2 s with it, 1.6 s without).
  """
  arrays = ocp.type_handlers.ArrayHandler(use_replica_parallel=jax.process_count() > 1)
  registry = ocp.type_handlers.create_type_handler_registry(
      (jax.Array, arrays), (np.ndarray, ocp.type_handlers.NumpyHandler()),
      *((kind, ocp.type_handlers.ScalarHandler()) for kind in (int, float, np.number)))
  return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def _key_name(key) -> str:
  for attribute in ("name", "key", "idx"):  # GetAttrKey, DictKey, SequenceKey.
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """{"generator/params/...": (shape, dtype)} for a pytree of arrays or array metadata.

  Paths are spelled the same whether the tree holds dataclasses (the state) or the nested
  dicts that orbax's metadata turns them into.
  """
  return {"/".join(_key_name(k) for k in path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def describe_mismatch(expected: Any, stored: Any) -> Optional[str]:
  """The first difference in structure, shape or dtype, as a phrase; None if they agree."""
  want, got = _specs(expected), _specs(stored)
  missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
  if missing:
    return f"it lacks {missing[0]}"
  if extra:
    return f"it has {extra[0]}, which the config does not"
  for path, spec in want.items():
    if got[path] != spec:
      return f"{path} is {got[path]} but the config needs {spec}"
  return None


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return text.splitlines()[0][:300] if text else type(error).__name__


SELECTION_MODES = ("max", "min")


def _options(keep: int, selection_metric: str, selection_mode: str
             ) -> ocp.CheckpointManagerOptions:
  if not selection_metric:
    return ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  if selection_mode not in SELECTION_MODES:
    raise ValueError(f"selection_mode {selection_mode!r}: allowed {SELECTION_MODES}")
  metric = lambda metrics: metrics[selection_metric]  # noqa: E731
  return ocp.CheckpointManagerOptions(
      create=True,
      # best_fn makes orbax write each save's metrics and rank checkpoints by them.
      best_fn=metric, best_mode=selection_mode,
      preservation_policy=checkpoint_managers.AnyPreservationPolicy([
          checkpoint_managers.LatestN(n=keep),
          # BestN keeps the last n of the checkpoints sorted ascending by the metric
          # (descending with `reverse`); checkpoints saved without a metric are the
          # business of LatestN alone.
          checkpoint_managers.BestN(get_metric_fn=metric, reverse=selection_mode == "min",
                                    n=1, keep_checkpoints_without_metrics=False)]))


def checkpoint_directory(workdir: str, checkpoint_dir: str = "") -> str:
  """Where a run's checkpoints are: `checkpoint_dir`, or by default `<workdir>/checkpoints`.

  A local path is made absolute, as orbax wants; a URL (gs://bucket/run) already is.
  """
  directory = epath.Path(checkpoint_dir or workdir)
  if not checkpoint_dir:
    directory = directory / "checkpoints"
  return os.fspath(directory if files.is_url(directory) else directory.absolute())


class Checkpointer:
  """`<workdir>/checkpoints` (or `checkpoint_dir`), managed by an orbax CheckpointManager
  (async, atomic).

  Args:
    workdir: the run's directory (local or gs://).
    keep: how many of the latest checkpoints to keep.
    selection_metric: if set, also keep the best checkpoint by this metric, which `save`
      receives from the evaluation of the saved step.
    selection_mode: "max" or "min": which value of the metric is best.
    checkpoint_dir: the checkpoints' directory, if not `<workdir>/checkpoints`
      (`config.checkpoint_dir`; local or a URL).
  """

  def __init__(self, workdir: str, keep: int, selection_metric: str = "",
               selection_mode: str = "max", checkpoint_dir: str = ""):
    self.directory = checkpoint_directory(workdir, checkpoint_dir)
    self.selection_metric = selection_metric
    self._manager = ocp.CheckpointManager(
        self.directory, options=_options(keep, selection_metric, selection_mode),
        # Declared up front so that a fresh process can read a checkpoint's metadata.
        item_handlers=_handler())

  @classmethod
  def for_config(cls, workdir: str, config: ml_collections.ConfigDict) -> "Checkpointer":
    """The checkpoints of a run of `config` (its keep_checkpoints, selection fields and
    checkpoint_dir; a config.json written without the newer fields reads as the defaults)."""
    return cls(workdir, config.keep_checkpoints, config.get("selection_metric", ""),
               config.get("selection_mode", "max"), config.get("checkpoint_dir", ""))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def best_step(self) -> Optional[int]:
    """The kept checkpoint with the best selection metric; None if none was saved with one.

    Raises:
      CheckpointError: the checkpointer has no selection metric.
    """
    if not self.selection_metric:
      raise CheckpointError("this run keeps no best checkpoint: its config has no "
                            "selection_metric (pass a step number instead of 'best')")
    # Orbax ranks the checkpoints saved with metrics; None when there are none.
    return self._manager.best_step()

  def path(self, step: Optional[int]) -> str:
    return "none" if step is None else os.fspath(epath.Path(self.directory) / str(step))

  def restore_latest(self, abstract_state: Any) -> Optional[Any]:
    """The latest checkpoint restored onto `abstract_state`'s shardings, or None if none exist.

    Raises:
      CheckpointError: it cannot be read, or its structure, shapes or dtypes differ from
        `abstract_state` (a different config wrote it).
    """
    step = self.latest_step()
    return None if step is None else self.restore(step, abstract_state)

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Checkpoint `step` restored onto `abstract_state`'s shardings.

    Raises:
      CheckpointError: there is no such step, it cannot be read, or it does not fit
        `abstract_state` (a different config wrote it).
    """
    if step not in self._manager.all_steps():
      raise CheckpointError(f"no checkpoint of step {step} in {self.directory} (it has "
                            f"{sorted(self._manager.all_steps()) or 'none'})")
    fix = ("restore the config that wrote it, or start a fresh run in another --workdir; "
           "the checkpoint was left untouched")
    where = self.path(step)
    try:
      stored = self._manager.item_metadata(step).tree
    except Exception as error:  # Orbax raises many types for unreadable files.
      raise CheckpointError(
          f"checkpoint {where} cannot be read ({_first_line(error)}): {fix}") from error
    problem = describe_mismatch(abstract_state, stored)
    if problem:
      raise CheckpointError(f"checkpoint {where} does not fit the config: {problem}; {fix}")
    try:
      return self._manager.restore(step, args=ocp.args.PyTreeRestore(
          abstract_state, restore_args=ocp.checkpoint_utils.construct_restore_args(
              abstract_state)))
    except Exception as error:  # Metadata intact but the array data is damaged.
      raise CheckpointError(
          f"checkpoint {where} cannot be restored ({_first_line(error)}): {fix}") from error

  def save(self, step: int, state: Any, metrics: Optional[Mapping[str, Any]] = None) -> None:
    """Starts an asynchronous save of `state` as `step` (a no-op if that step exists).

    `metrics`: the step's evaluation, if it ran; its selection metric, when finite, is
    recorded for the choice of the best checkpoint.
    """
    if step in self._manager.all_steps():
      return
    recorded = None
    if self.selection_metric and metrics and self.selection_metric in metrics:
      value = float(metrics[self.selection_metric])
      recorded = {self.selection_metric: value} if math.isfinite(value) else None
    self._manager.save(step, args=ocp.args.PyTreeSave(state), metrics=recorded)

  def reached_preemption(self, step: int) -> bool:
    """True when the cluster (multi-process) has signalled preemption at this step."""
    return self._manager.reached_preemption(step)

  def close(self) -> None:
    """Waits for pending saves to be committed."""
    self._manager.wait_until_finished()
    self._manager.close()


class SigtermFlag:
  """Turns SIGTERM into a flag the training loop polls, so it can save and exit cleanly.

  Multi-process runs rely on `Checkpointer.reached_preemption` instead: JAX's preemption
  service catches the signal and makes every process stop at the same step.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._event.set())

  def __bool__(self) -> bool:
    return self._event.is_set()

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
