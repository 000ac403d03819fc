"""`bigbigan.main` keeps JAX's persistent compilation cache in the workdir by default, so a
restarted run loads its training step instead of compiling it; `--compilation_cache=off`
turns it off."""

import os
import subprocess
import sys

import pytest

from conftest import FAST_COMPILE, REPO, cli_overrides

# The mixture BiGAN's jitted training step (families/bigan_update.py).
TRAIN_STEP = "jit_train_step"


def _main(workdir, *flags, total_steps):
  # One CPU device, without the tests' own cache (JAX_COMPILATION_CACHE_DIR would win); JAX
  # logs each compilation and each cache hit.
  env = {key: value for key, value in os.environ.items() if key != "JAX_COMPILATION_CACHE_DIR"}
  env.update(XLA_FLAGS=FAST_COMPILE, JAX_LOG_COMPILES="1")
  result = subprocess.run(
      [sys.executable, "-m", "bigbigan.main", "--config=configs/mixture.py",
       f"--workdir={workdir}", *flags,
       # A constant learning rate: a decaying schedule bakes total_steps into the step.
       *cli_overrides({"total_steps": total_steps, "eval_every_steps": total_steps,
                       "optimizer.lr_decay_start_fraction": 1.0})],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stderr


@pytest.mark.slow  # Three short mixture runs: ~30 s.
def test_a_restarted_run_loads_its_training_step_from_the_workdir_cache(tmp_path):
  workdir = tmp_path / "run"
  first = _main(workdir, total_steps=2)
  assert f"Persistent compilation cache hit for '{TRAIN_STEP}'" not in first
  assert any((workdir / "compilation_cache").iterdir())
  # The restart resumes from step 2 (with more steps to go, as after a preemption): its
  # training step comes from the cache.
  second = _main(workdir, total_steps=4)
  assert f"Persistent compilation cache hit for '{TRAIN_STEP}'" in second

  off = tmp_path / "off"
  assert "Persistent compilation cache hit" not in _main(
      off, "--compilation_cache=off", total_steps=2)
  assert not (off / "compilation_cache").exists()
