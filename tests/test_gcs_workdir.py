"""A run whose --workdir is on gs://: every file through etils' epath, redirected here to a
local directory, with no append and no rename on the bucket; the checkpoints in a local
`checkpoint_dir` (orbax writes arrays through tensorstore, which the epath mock does not
reach). Also TensorBoard's events after a resume: each step once."""

import contextlib
import json
import os
import pathlib
import shutil
import signal
import tempfile
from unittest import mock

import jax
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from etils.epath import gpath
from etils.epath import testing as epath_testing

import bigbigan
from bigbigan import checkpointing, evaluate, export, families, run_directory
from bigbigan import sharding, tensorboard_events, train
from bigbigan.data.toy import Mixture
from bigbigan.errors import ConfigError
from bigbigan.evaluation import fid
from conftest import REPO
from mnist_mock import fixed_image_batches, tiny_bigbigan_config

BUCKET = "gs://bucket"
TIMINGS = ("steps_per_sec", "uptime")  # clu's progress report.


class Bucket:
  """gs:// redirected to `root`, with a log of what the code did to the bucket."""

  def __init__(self, root: pathlib.Path):
    self.root = root
    self.write_modes: list[str] = []  # The mode of each file opened on gs:// to write.
    self.renamed: list[str] = []  # gs:// paths renamed or replaced (an object store can't).

  def local(self, path) -> str:
    text = os.fspath(path)
    return f"{self.root}/{text[len('gs://'):]}" if text.startswith("gs://") else text

  def path(self, url: str) -> pathlib.Path:
    return pathlib.Path(self.local(url))

  @contextlib.contextmanager
  def mocked(self):
    def one(original, path, *args, **kwargs):
      if os.fspath(path).startswith("gs://") and args and set(str(args[0])) & set("wax+"):
        self.write_modes.append(str(args[0]))
        # An object store has no directories: writing an object never needs a parent.
        os.makedirs(os.path.dirname(self.local(path)), exist_ok=True)
      return original(self.local(path), *args, **kwargs)

    def two(original, path, destination, *args, **kwargs):
      if "gs://" in os.fspath(path) + os.fspath(destination):
        self.renamed.append(os.fspath(path))
      return original(self.local(path), self.local(destination), *args, **kwargs)

    names = ("open", "exists", "isdir", "listdir", "makedirs", "mkdir", "remove", "rmtree",
             "stat", "glob", "walk")
    # With TensorFlow installed epath sends gs:// to tf.io.gfile, past the mock: hide it.
    with epath_testing.mock_epath(**{name: one for name in names}, rename=two, replace=two,
                                  copy=two), \
        mock.patch.object(gpath, "_is_tf_installed", lambda: False):
      yield self

  def assert_object_store_safe(self):
    assert self.write_modes and set(self.write_modes) <= {"w", "wb"}, self.write_modes
    assert not self.renamed, self.renamed


@pytest.fixture
def bucket(tmp_path):
  root = tmp_path / "bucket"
  root.mkdir()
  with Bucket(root).mocked() as mocked:
    yield mocked
  mocked.assert_object_store_safe()
  # Nothing went to a local directory named "gs:" (what a local file API makes of a URL).
  for directory in (pathlib.Path.cwd(), REPO, tmp_path, pathlib.Path(tempfile.gettempdir())):
    assert not (directory / "gs:").exists(), directory


def _metrics(directory: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def _scalar_events(directory: pathlib.Path) -> list[tuple[str, int, float]]:
  """(tag, step, value) of every scalar in the directory's event files, read back with
  TensorFlow's own reader."""
  found = []
  for path in sorted(directory.glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == "scalars":
          found.append((value.tag, event.step, float(tf.make_ndarray(value.tensor))))
  return found


def _each_step_once(events) -> dict[tuple[str, int], float]:
  keys = [(tag, step) for tag, step, _ in events]
  assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
  return {(tag, step): value for tag, step, value in events}


def _checkpoint_steps(directory: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


@contextlib.contextmanager
def _sigterm_during(step: int):
  """A SIGTERM to this process while `step` trains, as a preemption sends: the trainer
  notices its flag after `step` (the signal is sent from the trainer's preemption check of
  the step before, so the device prefetch's reading ahead does not move it)."""
  original = checkpointing.Checkpointer.reached_preemption

  def reached_preemption(self, at):
    if at == step - 1:
      os.kill(os.getpid(), signal.SIGTERM)
    return original(self, at)

  with mock.patch.object(checkpointing.Checkpointer, "reached_preemption", reached_preemption):
    yield


@pytest.mark.slow
def test_mixture_run_on_gs_resumes_exactly_and_shows_each_step_once(tiny_config, bucket,
                                                                     tmp_path):
  def config(name):
    return tiny_config("bigan", total_steps=6, log_every_steps=1,
                       checkpoint_dir=str(tmp_path / f"checkpoints_{name}"))

  uninterrupted = train.train_and_evaluate(config("a"), f"{BUCKET}/a")

  # Run b trains steps 3 and 4 on other data, and a SIGTERM stops it after step 4 (saved);
  # then checkpoint 4 is lost, as if the run had crashed after its save of step 2.
  data = Mixture.from_config(config("b")).train_batches(16, 0)
  other_data = (batch * (1.5 if step >= 3 else 1.0) for step, batch in enumerate(data, 1))
  with _sigterm_during(4):
    stopped = train.train_and_evaluate(config("b"), f"{BUCKET}/b", train_batches=other_data)
  assert int(stopped.step) == 4 and _checkpoint_steps(tmp_path / "checkpoints_b") == [2, 4]
  stale = {r["step"]: r for r in _metrics(bucket.path(f"{BUCKET}/b"))}
  assert sorted(stale) == [1, 2, 3, 4]
  shutil.rmtree(tmp_path / "checkpoints_b" / "4")
  # Resumed from 2, stopped by a SIGTERM after step 5 (saved), resumed from 5 to the end.
  with _sigterm_during(5):
    assert int(train.train_and_evaluate(config("b"), f"{BUCKET}/b").step) == 5
  assert _checkpoint_steps(tmp_path / "checkpoints_b") == [2, 4, 5]
  resumed = train.train_and_evaluate(config("b"), f"{BUCKET}/b")

  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed),
               jax.device_get(uninterrupted))
  a, b = bucket.path(f"{BUCKET}/a"), bucket.path(f"{BUCKET}/b")
  # The run-output contract, on the bucket; the checkpoints in checkpoint_dir only.
  for run in (a, b):
    assert {p.name for p in run.iterdir() if "tfevents" not in p.name} == {
        "config.json", "metrics.jsonl", "mixture_0000002.png", "mixture_0000004.png",
        "mixture_0000006.png"}
    assert json.loads((run / "config.json").read_text())["checkpoint_dir"].startswith(
        str(tmp_path))
  assert _checkpoint_steps(tmp_path / "checkpoints_a") == [2, 4, 6]
  assert _checkpoint_steps(tmp_path / "checkpoints_b") == [4, 5, 6]

  # metrics.jsonl and TensorBoard hold each step once, with the values of the run that
  # continued: those of the uninterrupted run, not the lost steps 3 and 4.
  assert [r["step"] for r in _metrics(a)] == [r["step"] for r in _metrics(b)] == list(range(1, 7))
  for x, y in zip(_metrics(a), _metrics(b)):
    for name in ("d_loss", "eg_loss", "modes_covered"):
      assert x.get(name) == y.get(name), (name, x["step"])
  # (Timings aside: they differ from run to run, and a restarted clock skips a step.)
  events_a, events_b = [{key: value for key, value in _each_step_once(_scalar_events(run)).items()
                         if key[0] not in TIMINGS} for run in (a, b)]
  assert events_b == events_a
  assert sorted(step for tag, step in events_b if tag == "d_loss") == list(range(1, 7))
  for step in (3, 4):
    assert events_b["d_loss", step] != pytest.approx(stale[step]["d_loss"])
    assert events_b["d_loss", step] == pytest.approx(_metrics(b)[step - 1]["d_loss"])

  # A resume that forgot its checkpoint_dir would start again from step 0: refused.
  before = {p.name: p.read_bytes() for p in b.iterdir()}
  with pytest.raises(ConfigError, match=r"config.checkpoint_dir='' holds no checkpoint, but "
                     r".*checkpoints_b .*pass --config.checkpoint_dir="):
    train.train_and_evaluate(tiny_config("bigan", total_steps=8), f"{BUCKET}/b")
  assert {p.name: p.read_bytes() for p in b.iterdir()} == before


def _write_scalars(directory, steps, value=0.0):
  writer = tf.summary.create_file_writer(str(directory))
  with writer.as_default():
    for step in steps:
      tf.summary.scalar("loss", value + step, step=step)
  writer.close()


def test_event_rewind_keeps_each_step_once_and_survives_a_crash(tmp_path):
  _write_scalars(tmp_path, [1, 2, 3, 4])
  _write_scalars(tmp_path, [5, 6])  # A second file, as from a resumed run.
  (first, second) = tensorboard_events.event_files(tmp_path)
  # A run killed mid-write leaves a truncated last record.
  second.write_bytes(second.read_bytes()[:-5])

  assert tensorboard_events.keep_events_up_to(tmp_path, 3) == 2  # Steps 4 and 5.
  (kept,) = tensorboard_events.event_files(tmp_path)
  assert kept not in (first, second)
  assert _each_step_once(_scalar_events(tmp_path)) == {("loss", 1): 1.0, ("loss", 2): 2.0,
                                                       ("loss", 3): 3.0}
  # A crash after the new file was written but before the old ones were deleted leaves
  # copies: the next rewind drops them, and leaves alone files with nothing to drop.
  shutil.copy(kept, tmp_path / "events.out.tfevents.0000000001.host.copy.v2")
  assert tensorboard_events.keep_events_up_to(tmp_path, 3) == 3
  assert len(_scalar_events(tmp_path)) == 3
  before = {p.name: p.read_bytes() for p in tensorboard_events.event_files(tmp_path)}
  assert tensorboard_events.keep_events_up_to(tmp_path, 3) == 0
  assert {p.name: p.read_bytes() for p in tensorboard_events.event_files(tmp_path)} == before


def test_event_writer_publishes_on_flush_and_rolls_over(bucket):
  writer = tensorboard_events.EventFileWriter(f"{BUCKET}/run", roll_bytes=200)
  directory = bucket.path(f"{BUCKET}/run")
  writer.write_scalars(1, {"loss": 1.0})
  assert not list(directory.glob("*tfevents*"))  # Nothing before a flush.
  writer.flush()
  assert len(_scalar_events(directory)) == 1
  for step in range(2, 8):
    writer.write_scalars(step, {"loss": float(step)})
    writer.flush()
  writer.close()
  files = tensorboard_events.event_files(directory)
  assert len(files) > 1  # Rolled over; the names sort in the order the files started.
  assert sorted(step for _, step, _ in _scalar_events(directory)) == list(range(1, 8))


def test_fid_reference_statistics_go_to_the_bucket(bucket):
  key = {"dataset": "mnist"}
  statistics = (np.zeros(2), np.eye(2))
  fid.cached_reference_statistics(f"{BUCKET}/run", key, lambda: statistics)
  assert len(list(bucket.path(f"{BUCKET}/run").glob("fid_reference_*.npz"))) == 1
  _, covariance = fid.cached_reference_statistics(f"{BUCKET}/run", key,
                                                  lambda: pytest.fail("not cached"))
  np.testing.assert_array_equal(covariance, np.eye(2))


@pytest.mark.parametrize("config", ["mixture.py", "mnist_bigan.py", "bigbigan_base.py",
                                    "resnet50.py", "revnet4x.py"])
def test_every_config_has_checkpoint_dir(config):
  from bigbigan.config_files import load_config  # pylint: disable=g-import-not-at-top
  assert load_config(f"{REPO}/configs/{config}").checkpoint_dir == ""


def test_checkpoint_dir_of_older_runs_and_bad_values(tiny_config):
  fields = json.loads(tiny_config().to_json_best_effort())
  del fields["checkpoint_dir"]  # A config.json written before the field existed.
  older = run_directory.config_from_dict(fields)
  assert checkpointing.checkpoint_directory("gs://b/run", older.checkpoint_dir) == (
      "gs://b/run/checkpoints")
  assert checkpointing.checkpoint_directory("run", "gs://c/ckpt") == "gs://c/ckpt"
  # (ConfigDict refuses a value of another type; None and blanks get through it.)
  for value in (None, "  "):
    with pytest.raises(ConfigError, match=rf"config.checkpoint_dir={value!r}: must be a dir"):
      families.validate_config(tiny_config(checkpoint_dir=value), num_devices=8)


@pytest.mark.slow(seconds=128)
def test_bigbigan_run_evaluate_and_export_on_gs(mock_mnist, bucket, tmp_path):
  def config(name, **overrides):
    # One save and one evaluation at the end: orbax's saves cost seconds each on 2 cores.
    return tiny_bigbigan_config(data_dir=mock_mnist, total_steps=3, eval_every_steps=3,
                                checkpoint_every_steps=3, checkpoint_dir=str(tmp_path / name),
                                **overrides)

  # The reference: 3 steps straight, without the (costly) evaluation, which does not change
  # the training state.
  run, straight = f"{BUCKET}/runs/tiny", f"{BUCKET}/runs/straight"
  reference = train.train_and_evaluate(config("straight", eval_metrics=()), straight,
                                       train_batches=fixed_image_batches(config("x"), 0))

  def sigterm_at_first_batch():
    batches = fixed_image_batches(config("x"), 0)
    os.kill(os.getpid(), signal.SIGTERM)  # Seen after step 1, however far the prefetch reads.
    yield from batches

  evaluated_config = config("checkpoints", eval_metrics=("knn", "reports"))
  stopped = train.train_and_evaluate(evaluated_config, run,
                                     train_batches=sigterm_at_first_batch())
  assert int(stopped.step) == 1 and _checkpoint_steps(tmp_path / "checkpoints") == [1]
  # The SIGTERM's checkpoint is written first: its standing statistics are still the initial
  # state's, not refreshed (the resume below refreshes them, and it equals the reference).
  initial, _ = families.create_state_and_update(evaluated_config, sharding.make_mesh(),
                                                seed=evaluated_config.seed)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(stopped.standing_stats),
               jax.device_get(initial.standing_stats))
  resumed = train.train_and_evaluate(evaluated_config, run,
                                     train_batches=fixed_image_batches(config("x"), 1))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed),
               jax.device_get(reference))
  directory = bucket.path(run)
  trained = _metrics(directory)
  assert [r["step"] for r in trained] == [1, 2, 3]
  for x, y in zip(trained, _metrics(bucket.path(straight))):
    assert x["d_loss"] == y["d_loss"] and x["eg_loss"] == y["eg_loss"]
  names = {p.name for p in directory.iterdir()}
  assert {"config.json", "metrics.jsonl", "reconstructions_0000003.png",
          "interpolations_0000003.png", "neighbours_0000003.png"} <= names
  assert "checkpoints" not in names and any("tfevents" in name for name in names)
  _each_step_once(_scalar_events(directory))

  # bigbigan.evaluate reads the run from the bucket and adds its results there.
  flags.FLAGS(["evaluate", f"--workdir={run}", "--metrics=knn", "--step=best"])
  evaluate.main(["evaluate"])
  evaluated = _metrics(directory)[-1]
  assert evaluated["evaluation"] == "bigbigan.evaluate" and evaluated["step"] == 3
  assert evaluated["knn_1_accuracy_cosine"] == trained[-1]["knn_1_accuracy_cosine"]
  assert ("knn_1_accuracy_cosine", 3) in {(tag, step) for tag, step, _ in
                                          _scalar_events(directory)}

  # bigbigan.export (its main is a thin wrapper of export_run, whose flags cannot be defined
  # beside evaluate's in one process) writes the bundle to the bucket; it loads from there.
  manifest = export.export_run(run, f"{BUCKET}/bundles/tiny", step=3)
  assert manifest["step"] == 3
  assert (bucket.path(f"{BUCKET}/bundles/tiny") / "bundle.json").exists()
  assert bigbigan.load(f"{BUCKET}/bundles/tiny").step == 3
