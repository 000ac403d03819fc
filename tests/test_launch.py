"""The launch scripts' dry runs print the commands they would run, and bad arguments stop
them with a one-line message."""

import subprocess

from conftest import REPO


def _run(script, *args):
  return subprocess.run(["bash", str(REPO / "launch" / script), *args], capture_output=True,
                        text=True, check=False)


def test_tpu_pod_dry_run_prints_every_step():
  out = _run("tpu_pod.sh", "--name", "bb", "--zone", "us-central2-b", "--accelerator",
             "v4-128", "--config", "configs/revnet4x.py", "--workdir", "gs://b/run",
             "--tfds_data_dir", "gs://b/tfds", "--dry-run")
  assert out.returncode == 0, out.stderr
  create, copy, install, run = out.stdout.strip().splitlines()
  assert create == ("gcloud compute tpus tpu-vm create bb --zone us-central2-b "
                    "--accelerator-type v4-128 --version tpu-ubuntu2204-base")
  assert copy.startswith("gcloud compute tpus tpu-vm scp --recurse --zone us-central2-b "
                         "--worker=all ") and copy.endswith(" bb:bigbigan")
  assert "--worker=all" in install and "pip install -q -e ./bigbigan" in install
  assert run == ("gcloud compute tpus tpu-vm ssh bb --zone us-central2-b --worker=all "
                 "--command 'cd bigbigan && TFDS_DATA_DIR=gs://b/tfds python -m bigbigan.main "
                 "--config=configs/revnet4x.py --workdir=gs://b/run --distributed'")


def test_tpu_pod_runs_chosen_steps_and_refuses_bad_arguments():
  out = _run("tpu_pod.sh", "--name", "bb", "--zone", "z", "--dry-run", "delete")
  assert out.stdout.strip() == "gcloud compute tpus tpu-vm delete bb --zone z --quiet"
  missing = _run("tpu_pod.sh", "--name", "bb", "--zone", "z", "--dry-run", "run")
  assert missing.returncode == 2 and "run needs --config and --workdir" in missing.stderr
  unknown = _run("tpu_pod.sh", "--nmae", "bb")
  assert unknown.returncode == 2 and "unknown argument '--nmae'" in unknown.stderr


def test_slurm_dry_run_prints_the_batch_script():
  out = _run("slurm_gpu.sh", "--nodes", "4", "--gpus-per-node", "8", "--config",
             "configs/revnet4x.py", "--workdir", "/shared/run", "--partition", "gpu",
             "--tfds_data_dir", "/shared/tfds", "--dry-run")
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  for expected in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1",
                   "#SBATCH --gpus-per-node=8", "#SBATCH --partition=gpu",
                   "#SBATCH --signal=TERM@120", f"cd {REPO}",
                   "export TFDS_DATA_DIR=/shared/tfds"):
    assert expected in lines, expected
  assert lines[-1] == ("srun --kill-on-bad-exit=1 python -m bigbigan.main "
                       "--config=configs/revnet4x.py --workdir=/shared/run --distributed")
  missing = _run("slurm_gpu.sh", "--dry-run")
  assert missing.returncode == 2 and "--config and --workdir are required" in missing.stderr
