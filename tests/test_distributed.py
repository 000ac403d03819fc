"""A multi-process job under `distributed.supervised`: a slow peer slows it, a peer that
failed or died stops the others within a bounded time with one line naming it, and a job
that ends well leaves through JAX's shutdown barrier together."""

import os
import subprocess
import sys
import time

import pytest

from conftest import FAST_COMPILE, REPO, free_port
import distributed_job


def _job(mode: str, tmp_path):
  """Runs both processes; returns [(exit status, stdout, stderr, seconds)] by process."""
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {FAST_COMPILE}",
         "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
  port, start = free_port(), time.monotonic()
  logs = [(open(tmp_path / f"out{i}", "w+"), open(tmp_path / f"err{i}", "w+")) for i in (0, 1)]
  processes = [subprocess.Popen([sys.executable, str(REPO / "tests" / "distributed_job.py"),
                                 mode, str(i), str(port)], cwd=REPO, env=env, stdout=out,
                                stderr=err) for i, (out, err) in enumerate(logs)]
  results = []
  try:
    for process, (out, err) in zip(processes, logs):
      code = process.wait(timeout=300)
      out.seek(0), err.seek(0)
      results.append((code, out.read(), err.read(), time.monotonic() - start))
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  return results


def _last_line(text: str) -> str:
  return text.strip().splitlines()[-1]


@pytest.mark.slow  # Two processes start JAX: about 10 s.
@pytest.mark.parametrize("mode", ["ok", "slow"])
def test_a_job_that_ends_well_ends_well_in_every_process(mode, tmp_path):
  # "slow": process 1 sleeps three peer timeouts before the collective; its watch thread
  # beats meanwhile, so nobody takes it for dead, and process 0 waits in the collective.
  for code, out, err, _ in _job(mode, tmp_path):
    assert code == 0, err[-3000:]
    assert _last_line(out) == "sum=6.0"  # 1 + 1 + 2 + 2, over both processes.
    assert "error" not in err


@pytest.mark.slow
def test_a_peer_that_raises_stops_the_job_with_one_line_naming_it(tmp_path):
  (code0, out0, err0, _), (code1, _, err1, _) = _job("raise", tmp_path)
  assert code1 == 1 and _last_line(err1) == (
      "bigbigan: error: config.total_steps=0: must be a positive integer")
  assert code0 == 1, err0[-3000:]
  assert _last_line(err0) == (
      "bigbigan: error: process 1 failed (config.total_steps=0: must be a positive "
      "integer); this process stops too")
  assert "sum=" not in out0.replace("warm-up sum=", "")


@pytest.mark.slow
def test_a_peer_that_dies_stops_the_job_within_the_peer_timeout(tmp_path):
  (code0, out0, err0, seconds0), (code1, _, _, _) = _job("die", tmp_path)
  assert code1 == -9  # SIGKILL.
  assert code0 == 1, err0[-3000:]
  assert _last_line(err0).startswith(
      "bigbigan: error: process 1 stopped responding (no heartbeat for "
      f"{distributed_job.PEER_TIMEOUT_SECONDS} s")
  # Process 0 was blocked in a collective with the dead peer; it left within the timeout
  # and a few polls (plus the start-up of both processes).
  assert seconds0 < 60
