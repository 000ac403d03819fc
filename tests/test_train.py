"""The trainer end to end: resume, checkpoints, the run-output contract and clear errors."""

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from bigbigan import sharding, train
from bigbigan.data.toy import Mixture
from bigbigan.errors import CheckpointError, ConfigError, NonFiniteLossError
from conftest import FAST_COMPILE, REPO, cli_overrides, free_port, run_processes


def _checkpoint_steps(workdir) -> list[int]:
  directory = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _tree_digest(directory) -> str:
  """A digest of every file's path and bytes under `directory`."""
  digest = hashlib.sha256()
  for path in sorted(pathlib.Path(directory).rglob("*")):
    digest.update(str(path.relative_to(directory)).encode())
    if path.is_file():
      digest.update(path.read_bytes())
  return digest.hexdigest()


def _metrics(workdir) -> list[dict]:
  with open(pathlib.Path(workdir) / "metrics.jsonl") as f:
    return [json.loads(line) for line in f]


def _preempted_at(config, preempt_step: int):
  """The config's training batches, with a SIGTERM to this process while at `preempt_step`.

  The trainer reads the batch of step s + DEVICE_PREFETCH as step s starts (prefetch).
  """
  batches = Mixture.from_config(config).train_batches(config.batch_size, config.seed)
  for step, batch in enumerate(batches, start=1 - sharding.DEVICE_PREFETCH):
    if step == preempt_step:
      os.kill(os.getpid(), signal.SIGTERM)
    yield batch


@pytest.mark.parametrize("variant, overrides", [
    ("bigan", dict(generator__batch_norm=True, discriminator__batch_norm=True)),
    ("ali", {}),
    ("gan", dict(update_mode="simultaneous")),
    # The moving averages are part of the state, and restored with it.
    ("bigan", dict(ema_decay=0.9, ema_start_step=1, objective="joint_latent_regressor")),
])
@pytest.mark.slow
def test_resume_equals_uninterrupted_run(tiny_config, tmp_path, variant, overrides):
  config = tiny_config(variant, total_steps=6, checkpoint_every_steps=2, log_every_steps=1,
                       **overrides)
  uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))

  # Stopped by SIGTERM at step 3 (after saving step 2 and training on), then restarted.
  stopped = train.train_and_evaluate(config, str(tmp_path / "b"),
                                     train_batches=_preempted_at(config, 3))
  assert int(stopped.step) == 3 and _checkpoint_steps(tmp_path / "b") == [2, 3]
  resumed = train.train_and_evaluate(config, str(tmp_path / "b"))

  assert int(resumed.step) == int(uninterrupted.step) == 6
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed),
               jax.device_get(uninterrupted))
  # metrics.jsonl holds each step once, resumed or not, with identical training losses.
  a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
  assert [m["step"] for m in a] == [m["step"] for m in b] == [1, 2, 3, 4, 5, 6]
  for name in ("d_loss", "eg_loss", "modes_covered"):
    assert [m.get(name) for m in a] == [m.get(name) for m in b], name


@pytest.mark.slow
def test_keeps_the_last_n_checkpoints(tiny_config, tmp_path):
  config = tiny_config("gan", total_steps=5, checkpoint_every_steps=1, keep_checkpoints=2)
  train.train_and_evaluate(config, str(tmp_path))
  assert _checkpoint_steps(tmp_path) == [4, 5]


@pytest.mark.parametrize("overrides, message", [
    (dict(batch_size=12), "config.batch_size=12 does not divide over 8 devices"),
    (dict(total_steps=0), "config.total_steps=0: must be a positive integer"),
    (dict(eval_every_steps=-5), "config.eval_every_steps=-5: must be a positive integer"),
    (dict(network="transformer"), "config.network='transformer' is unknown: allowed ('mlp', 'biggan')"),
    (dict(loss="wasserstein"), "config.loss='wasserstein' is unknown: allowed"),
    (dict(encoder__kind="flow"), "config.encoder.kind='flow' is unknown: allowed"),
    (dict(update_mode="random"), "config.update_mode='random' is unknown"),
])
@pytest.mark.slow
def test_bad_config_is_refused_before_touching_checkpoints(tiny_config, tmp_path, overrides,
                                                           message):
  train.train_and_evaluate(tiny_config("bigan", total_steps=2), str(tmp_path))
  before = _tree_digest(tmp_path)
  with pytest.raises(ConfigError) as error:
    train.train_and_evaluate(tiny_config("bigan", **overrides), str(tmp_path))
  assert message in str(error.value)
  assert "\n" not in str(error.value)
  assert _tree_digest(tmp_path) == before


@pytest.mark.slow
def test_incompatible_checkpoint_is_refused_and_kept(tiny_config, tmp_path):
  train.train_and_evaluate(tiny_config("bigan", total_steps=2), str(tmp_path))
  before = _tree_digest(tmp_path / "checkpoints")
  wider = tiny_config("bigan", total_steps=4, generator__hidden_sizes=(32, 32))
  with pytest.raises(CheckpointError, match=r"checkpoints/2 .*another --workdir"):
    train.train_and_evaluate(wider, str(tmp_path))
  no_encoder = tiny_config("gan", total_steps=4)
  with pytest.raises(CheckpointError, match=r"checkpoints/2"):
    train.train_and_evaluate(no_encoder, str(tmp_path))
  assert _tree_digest(tmp_path / "checkpoints") == before
  assert _checkpoint_steps(tmp_path) == [2]


@pytest.mark.parametrize("damaged", [
    "default/_METADATA",  # The tree's structure and shapes.
    "default/**/d/*",  # The array data (and the per-array metadata stored beside it).
])
def test_corrupt_checkpoint_is_refused_and_kept(tiny_config, tmp_path, damaged):
  train.train_and_evaluate(tiny_config("bigan", total_steps=2), str(tmp_path))
  files = [p for p in (tmp_path / "checkpoints" / "2").glob(damaged) if p.is_file()]
  assert files
  for path in files:
    path.write_bytes(b"\x00" * 64)
  before = _tree_digest(tmp_path / "checkpoints")
  with pytest.raises(CheckpointError, match="checkpoints/2 cannot be (read|restored)"):
    train.train_and_evaluate(tiny_config("bigan", total_steps=4), str(tmp_path))
  assert _tree_digest(tmp_path / "checkpoints") == before


def test_non_finite_loss_stops_with_step_and_last_good_checkpoint(tiny_config, tmp_path):
  config = tiny_config("bigan", total_steps=8, checkpoint_every_steps=2, log_every_steps=4)
  good = Mixture.from_config(config).train_batches(16, config.seed)

  def poisoned():
    for step in range(1, 9):
      batch = next(good)
      yield batch * np.nan if step >= 5 else batch  # Step 5's input is corrupt.

  with pytest.raises(NonFiniteLossError) as error:
    train.train_and_evaluate(config, str(tmp_path), train_batches=poisoned())
  message = str(error.value)
  assert "at step 5" in message
  assert f"last good checkpoint: {tmp_path / 'checkpoints' / '4'}" in message
  assert _checkpoint_steps(tmp_path) == [2, 4]


def _run_main(workdir, overrides=None, wait=True, config="configs/mixture.py"):
  command = [sys.executable, "-m", "bigbigan.main", f"--config={config}",
             f"--workdir={workdir}", *cli_overrides(overrides)]
  env = {**os.environ, "XLA_FLAGS": FAST_COMPILE}  # One CPU device, as a user's laptop has.
  if not wait:
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)


@pytest.mark.slow
def test_main_writes_the_run_output_contract(tmp_path):
  result = _run_main(tmp_path, {"total_steps": 4})
  assert result.returncode == 0, result.stderr[-3000:]
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["total_steps"] == 4 and config["encoder"]["kind"] == "deterministic"
  records = _metrics(tmp_path)
  assert [r["step"] for r in records] == [2, 4]
  for name in ("d_loss", "eg_loss", "modes_covered", "high_quality_fraction",
               "reconstruction_error", "steps_per_sec"):
    assert all(name in r for r in records), name
  assert 0 <= records[-1]["modes_covered"] <= 25
  assert _checkpoint_steps(tmp_path) == [2, 4]
  assert sorted(p.name for p in tmp_path.glob("*.png")) == ["mixture_0000002.png",
                                                            "mixture_0000004.png"]
  assert list(tmp_path.glob("events.out.tfevents.*"))
  assert "steps/s" in result.stderr  # clu's progress report on the console.


@pytest.mark.slow
def test_main_reports_bad_input_in_one_line(tmp_path):
  (tmp_path / "checkpoints").mkdir()
  result = _run_main(tmp_path, {"total_steps": 0}, config="configs/mixture.py:ali")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      "bigbigan: error: config.total_steps=0: must be a positive integer")
  assert not any((tmp_path / "checkpoints").iterdir())
  unknown = _run_main(tmp_path, {"batch_sizes": 16})
  assert unknown.returncode != 0 and "batch_sizes" in unknown.stderr
  bad_variant = _run_main(tmp_path, {}, config="configs/mixture.py:bigan_typo")
  assert bad_variant.returncode == 1 and bad_variant.stderr.strip() == (
      "bigbigan: error: configs/mixture.py:bigan_typo: allowed variants ('bigan', 'ali', "
      "'gan')")


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tmp_path):
  process = _run_main(tmp_path, {"total_steps": 1_000_000, "checkpoint_every_steps": 1_000_000,
                                 "log_every_steps": 50, "eval_every_steps": 1_000_000},
                      wait=False)
  deadline = time.time() + 300
  while not (tmp_path / "metrics.jsonl").exists() or not _metrics(tmp_path):
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.time() < deadline, "no progress within 300 s"
    time.sleep(0.5)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr[-3000:]
  saved = _checkpoint_steps(tmp_path)
  assert len(saved) == 1 and 50 <= saved[0] < 1_000_000
  assert "Preempted" in stderr


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path):
  """jax.distributed over 2 local processes x 2 devices trains as 1 process x 4 devices,
  through a checkpoint: the 2-process run stops at step 2 and resumes to step 4."""

  def command(name, devices, total_steps, *extra):
    argv = [sys.executable, "-m", "bigbigan.main", "--config=configs/mixture.py",
            f"--workdir={tmp_path / name.split('_')[0]}",
            *cli_overrides({"total_steps": total_steps}), *extra]
    return name, argv, {**os.environ,
                        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"}

  def two_processes(total_steps):
    port = free_port()
    return [command(f"multi_{i}_{total_steps}", 2, total_steps, "--distributed",
                    f"--coordinator_address=localhost:{port}", "--num_processes=2",
                    f"--process_id={i}") for i in range(2)]

  run_processes([*two_processes(2), command("single", 4, 4)], tmp_path)
  run_processes(two_processes(4), tmp_path)

  multi, one = _metrics(tmp_path / "multi"), _metrics(tmp_path / "single")
  assert [r["step"] for r in multi] == [r["step"] for r in one] == [2, 4]
  for a, b in zip(multi, one):
    for name in ("d_loss", "eg_loss", "encoder_std", "reconstruction_error"):
      np.testing.assert_allclose(a[name], b[name], rtol=1e-5, err_msg=name)
    assert a["modes_covered"] == b["modes_covered"]
  assert _checkpoint_steps(tmp_path / "multi") == [2, 4]
