"""Seconds from SIGTERM to a complete checkpoint: what a preempted run needs of its grace
period.

    TFDS_DATA_DIR=/path/to/tfds python benchmarks/preemption_save.py --workdir=/tmp/preempt \
        [--config=configs/bigbigan_base.py:tiny]

Starts `python -m bigbigan.main` on the config (MNIST for `:tiny`) in a fresh `--workdir`,
sends SIGTERM one second after its first log of training speed, and prints the seconds
until the checkpoint's step directory appears (orbax renames it into place once the save is
complete) and until the process exits.
"""

import argparse
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="Emptied first.")
  parser.add_argument("--config", default="configs/bigbigan_base.py:tiny")
  args = parser.parse_args()
  shutil.rmtree(args.workdir, ignore_errors=True)
  run = subprocess.Popen(
      [sys.executable, "-m", "bigbigan.main", f"--config={args.config}",
       f"--workdir={args.workdir}", "--alsologtostderr", "--config.total_steps=1000000",
       "--config.log_every_steps=5", "--config.eval_every_steps=1000000",
       "--config.checkpoint_every_steps=1000000"],
      cwd=REPO, stderr=subprocess.PIPE, text=True)
  for line in run.stderr:
    if "steps_per_sec" in line:
      break
  threading.Thread(target=lambda: [None for _ in run.stderr], daemon=True).start()
  time.sleep(1)
  checkpoints = pathlib.Path(args.workdir) / "checkpoints"
  start = time.perf_counter()
  run.send_signal(signal.SIGTERM)
  while not (checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())):
    if run.poll() is not None:
      raise SystemExit(f"preemption_save: the run exited ({run.returncode}) without a checkpoint")
    time.sleep(0.02)
  saved = time.perf_counter() - start
  run.wait()
  print(f"SIGTERM to a complete checkpoint: {saved:.2f} s; to the exit: "
        f"{time.perf_counter() - start:.2f} s (status {run.returncode})")


if __name__ == "__main__":
  main()
