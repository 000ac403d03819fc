"""A user's mistake on the command line is one line, exit 1, and nothing written.

Each case runs `python -m bigbigan.main` in a subprocess, as a user would, and checks that
stderr has no traceback and exactly one `bigbigan: error:` line, its last, naming the fix;
that the exit status is 1; and that no file was created or changed.
"""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from conftest import FAST_COMPILE, REPO

QUICKSTART = "configs/quickstart.py"


def _main(*args, timeout=300):
  env = {**os.environ, "XLA_FLAGS": FAST_COMPILE}  # One CPU device, as a user's laptop has.
  return subprocess.run([sys.executable, "-m", "bigbigan.main", *map(str, args)], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=timeout)


def _the_error(result) -> str:
  """The one `bigbigan: error:` line of a failed run, checked to be its last and alone."""
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("bigbigan: error:")]
  assert errors == [result.stderr.strip().splitlines()[-1]], result.stderr[-3000:]
  return errors[0]


def _digest(directory) -> dict:
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("override, expected", [
    ("--config.totl_steps=5",
     "bigbigan: error: --config.totl_steps: the config has no field 'totl_steps'; did you "
     "mean --config.total_steps"),
    ("--config.encoder.widht=2",
     "bigbigan: error: --config.encoder.widht: config.encoder has no field 'widht'; did you "
     "mean --config.encoder.width?"),
    ("--config.encodr.width=2",
     "bigbigan: error: --config.encodr.width: the config has no field 'encodr'; did you mean "
     "--config.encoder"),
    ("--config.total_steps.every=2",
     "bigbigan: error: --config.total_steps.every: config.total_steps is a value, not a "
     "group of fields"),
    ("--config.total_steps=many",
     "bigbigan: error: flag --config.total_steps=many: invalid literal for int()"),
    ("--totl_steps=5", "bigbigan: error: Unknown command line flag 'totl_steps'"),
])
def test_a_bad_flag_is_one_line(override, expected, tmp_path):
  workdir = tmp_path / "run"
  assert _the_error(_main(f"--config={QUICKSTART}", f"--workdir={workdir}",
                          override)).startswith(expected)
  assert not workdir.exists()


def test_a_missing_config_file_is_one_line(tmp_path):
  error = _the_error(_main("--config=configs/quikstart.py", f"--workdir={tmp_path / 'run'}"))
  assert error == "bigbigan: error: config file configs/quikstart.py not found"
  assert not (tmp_path / "run").exists()


@pytest.mark.slow  # Imports TensorFlow and JAX before the workdir is looked at: ~10 s.
def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  workdir = tmp_path / "notes.txt"
  workdir.write_text("a user's file\n")
  error = _the_error(_main(f"--config={QUICKSTART}", f"--workdir={workdir}"))
  assert error.startswith(f"bigbigan: error: --workdir={workdir} is a file, not a directory")
  assert workdir.read_text() == "a user's file\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]

  inside = workdir / "run"  # A parent that is a file.
  error = _the_error(_main(f"--config={QUICKSTART}", f"--workdir={inside}"))
  assert error.startswith(f"bigbigan: error: --workdir={inside} cannot be created")
  assert workdir.read_text() == "a user's file\n"


@pytest.mark.slow  # As above, ~10 s.
def test_a_run_directory_passed_as_a_bundle_is_one_line(tmp_path):
  run = tmp_path / "run"  # What `bigbigan.main` leaves: config.json, checkpoints, metrics.
  (run / "checkpoints" / "10").mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({"network": "biggan"}))
  (run / "metrics.jsonl").write_text('{"step": 10}\n')
  before = _digest(run)
  workdir = tmp_path / "finetune"
  error = _the_error(_main(f"--config={QUICKSTART}", f"--workdir={workdir}",
                           f"--config.init_from={run}"))
  assert error == (
      f"bigbigan: error: config.init_from: {run} is a training run's directory, not a "
      f"bundle: export it with `python -m bigbigan.export --workdir={run} --out=BUNDLE`, "
      "then pass BUNDLE")
  assert not workdir.exists() and _digest(run) == before


@pytest.mark.slow  # As above, ~10 s.
def test_a_full_size_config_on_cpu_jax_is_one_line(tmp_path):
  workdir = tmp_path / "run"
  error = _the_error(_main("--config=configs/revnet4x.py", f"--workdir={workdir}"))
  assert error == (
      "bigbigan: error: a full-size config (G at 128 pixels, E at 256 pixels, a depth-50 "
      "encoder) and JAX runs on the CPU only: install JAX for the GPU (pip install -U "
      "\"jax[cuda12]\") or TPU (pip install -U \"jax[tpu]\"), see the README's Install, or "
      "pass --allow_cpu to run it on the CPU")
  assert not workdir.exists()
  # With --allow_cpu the run goes on, to look for ImageNet: test_train_bigbigan.py's
  # test_missing_imagenet_is_one_clear_line.


@pytest.mark.slow  # Trains the mixture for a step: ~25 s.
def test_a_non_finite_loss_is_one_line_naming_the_step_and_the_loss(tmp_path):
  # Adam's steps are about the learning rate whatever the gradient: at 1e30 the first update
  # sends the weights, and the next step's losses, to infinity and NaN.
  workdir = tmp_path / "run"
  fields = {"total_steps": 4, "log_every_steps": 2, "checkpoint_every_steps": 2,
            "eval_every_steps": 4, "batch_size": 16, "mixture.num_train": 512,
            "mixture.num_eval": 64, "eval_samples": 64,
            "optimizer.generator_learning_rate": 1e30,
            "optimizer.discriminator_learning_rate": 1e30}
  error = _the_error(_main("--config=configs/mixture.py", f"--workdir={workdir}",
                           *(f"--config.{k}={v}" for k, v in fields.items())))
  assert error.startswith("bigbigan: error: non-finite ")
  step = int(error.split(" at step ")[1].split(";")[0])
  assert 1 <= step <= 2
  named = error.split("non-finite ")[1].split(" at step")[0]
  assert named.split("=")[0].endswith("_loss"), named  # A loss first, then anything else.
  assert error.endswith("start again with a lower learning rate, or check the input data")
  # Nothing non-finite reached a checkpoint.
  assert not any((workdir / "checkpoints").iterdir())


def test_loading_a_run_directory_says_how_to_export_it(tmp_path):
  import bigbigan  # pylint: disable=g-import-not-at-top
  from bigbigan.errors import BundleError  # pylint: disable=g-import-not-at-top
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(BundleError) as error:
    bigbigan.load(str(tmp_path))
  assert str(error.value) == (
      f"{tmp_path} is a training run's directory, not a bundle: export it with "
      f"`python -m bigbigan.export --workdir={tmp_path} --out=BUNDLE`, then pass BUNDLE")
