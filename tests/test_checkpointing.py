"""Best-checkpoint selection: the checkpoint whose selection metric peaked mid-run is kept
beside the latest ones, across restarts, and `--step=best` restores it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigbigan import checkpointing, evaluate, export, run_directory, sharding, train
from bigbigan.errors import CheckpointError, ConfigError
from bigbigan.evaluation.image_representation import NearestNeighbours
from mnist_mock import fixed_image_batches, tiny_bigbigan_config

METRIC = "knn_1_train_val_accuracy_cosine"


def _saved_steps(checkpointer) -> list[int]:
  return sorted(checkpointer._manager.all_steps())  # pylint: disable=protected-access


@pytest.mark.parametrize("mode,values,best", [
    ("max", [0.2, 0.5, 0.9, 0.4, 0.3, 0.1], 3),
    ("min", [40.0, 31.0, 12.0, 19.0, 25.0, 30.0], 3)])
def test_the_peak_survives_later_saves(tmp_path, mode, values, best):
  state = {"w": jnp.arange(4.0)}
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=2, selection_metric=METRIC,
                                            selection_mode=mode)
  for step, value in enumerate(values, start=1):
    # Odd steps are periodic saves without an evaluation: only "keep the latest" holds them.
    metrics = {METRIC: value, "other": 0.0} if step % 2 or step == best else None
    checkpointer.save(step, jax.tree.map(lambda w, s=step: w + s, state), metrics=metrics)
  checkpointer.close()
  # A fresh process reads the metrics back from the checkpoints.
  reopened = checkpointing.Checkpointer(str(tmp_path), keep=2, selection_metric=METRIC,
                                        selection_mode=mode)
  assert _saved_steps(reopened) == sorted({best, len(values) - 1, len(values)})
  assert reopened.best_step() == best
  assert reopened.latest_step() == len(values)
  restored = reopened.restore(best, state)
  np.testing.assert_array_equal(restored["w"], np.arange(4.0) + best)
  reopened.close()


def test_without_a_selection_metric_best_is_refused(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=2)
  checkpointer.save(1, {"w": jnp.zeros(2)})
  checkpointer.close()
  with pytest.raises(CheckpointError, match="no selection_metric"):
    checkpointer.best_step()


def test_non_finite_metrics_are_not_candidates(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=1, selection_metric=METRIC)
  checkpointer.save(1, {"w": jnp.zeros(2)}, metrics={METRIC: 0.5})
  checkpointer.save(2, {"w": jnp.zeros(2)}, metrics={METRIC: float("nan")})
  checkpointer.close()
  assert checkpointer.best_step() == 1 and _saved_steps(checkpointer) == [1, 2]


@pytest.mark.slow
def test_trainer_keeps_the_best_step_and_evaluate_and_export_use_it(mock_mnist, tmp_path,
                                                                    monkeypatch):
  # The trainer's evaluation scripted: the selection metric peaks at step 2 (of 4, then 5).
  scripted = {1: 0.2, 2: 0.9, 3: 0.5, 4: 0.1, 5: 0.0}
  monkeypatch.setattr(NearestNeighbours, "run",
                      lambda self, predict, state, step: {METRIC: scripted[step]})
  config = tiny_bigbigan_config(data_dir=mock_mnist, total_steps=4, eval_every_steps=1,
                                checkpoint_every_steps=4, keep_checkpoints=1,
                                eval_metrics=("knn",))
  train.train_and_evaluate(config, str(tmp_path),
                           train_batches=fixed_image_batches(config, 0))
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                if p.name.isdigit()) == [2, 4]
  mesh = sharding.make_mesh()
  step, state, _ = run_directory.restore_run(config, str(tmp_path), "best", mesh)
  assert step == 2 and int(state.step) == 2
  # Resuming still starts from the latest.
  resumed = train.train_and_evaluate(
      tiny_bigbigan_config(data_dir=mock_mnist, total_steps=5, eval_every_steps=1,
                           checkpoint_every_steps=4, keep_checkpoints=1,
                           eval_metrics=("knn",)),
      str(tmp_path), train_batches=fixed_image_batches(config, 4))
  assert int(resumed.step) == 5
  # bigbigan.evaluate and bigbigan.export read "best" the same way.
  step, results, _ = evaluate.evaluate_checkpoint(
      run_directory.load_run_config(str(tmp_path)), str(tmp_path), step="best")
  assert step == 2 and results == {METRIC: 0.9}
  manifest = export.export_run(str(tmp_path), str(tmp_path / "bundle"), step="best")
  assert manifest["step"] == 2


def test_step_flag_values():
  assert run_directory.parse_step(None) is None and run_directory.parse_step("best") == "best"
  assert run_directory.parse_step("1200") == 1200
  with pytest.raises(ConfigError, match="--step=last: pass a step number, or 'best'"):
    run_directory.parse_step("last")
