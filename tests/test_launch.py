"""The launch scripts' dry runs: the commands they would run, the install's tree on a worker
(unpacked twice, as a second install would), every `--config.*` override reaching
bigbigan.main unchanged through two shells, and one-line refusals of bad arguments."""

import os
import shlex
import subprocess
import sys

import pytest

from conftest import REPO

# Overrides with what a shell would change: spaces, quotes, $, parentheses, a glob.
OVERRIDES = ["--config.remat=blocks", "--config.accumulation_steps=8",
             "--config.dataset=folder:/data/my photos/it's",
             "--config.generator.channels=(1, 2)", '--config.init_from="$HOME"/b*']


def _run(script, *args, env=None):
  return subprocess.run(["bash", str(REPO / "launch" / script), *map(str, args)],
                        capture_output=True, text=True, check=False,
                        env={**os.environ, **(env or {})})


def _pod(*args, tmp_path):
  return _run("tpu_pod.sh", "--name", "bb", "--zone", "us-central2-b", *args,
              env={"TMPDIR": str(tmp_path)})


def _remote_command(ssh_line: str) -> str:
  """The --command of a printed `gcloud ... ssh` line, as the local shell passes it."""
  words = shlex.split(ssh_line)
  return words[words.index("--command") + 1]


def test_tpu_pod_dry_run_creates_installs_twice_and_runs_with_overrides(tmp_path):
  out = _pod("--accelerator", "v4-128", "--config", "configs/revnet4x.py", "--workdir",
             "gs://b/run", "--tfds_data_dir", "gs://b/tfds", "--dry-run", "create", "install",
             "install", "run", *OVERRIDES, tmp_path=tmp_path)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  archive = tmp_path / "bigbigan-bb.tar.gz"
  ssh = "gcloud compute tpus tpu-vm ssh bb --zone us-central2-b --worker=all --command "
  install = [
      f"git -C {REPO} archive --format=tar.gz --output={archive} HEAD",
      f"gcloud compute tpus tpu-vm scp --zone us-central2-b --worker=all {archive} "
      "bb:bigbigan.tar.gz",
      ssh + shlex.quote("cd ~ && rm -rf bigbigan && mkdir bigbigan && tar -xzf "
                        "bigbigan.tar.gz -C bigbigan && rm bigbigan.tar.gz"),
      ssh + shlex.quote(
          "cd ~ && python3 -m pip install -q --user --upgrade uv && ~/.local/bin/uv venv -q "
          "--allow-existing --python 3.12 bigbigan-venv && ~/.local/bin/uv pip install -q "
          "--python bigbigan-venv/bin/python -e './bigbigan[train]' 'jax[tpu]' && "
          "bigbigan-venv/bin/python -c 'import jax; print(jax.process_index(), "
          "jax.devices())'")]
  expected = ["gcloud compute tpus tpu-vm create bb --zone us-central2-b --accelerator-type "
              "v4-128 --version tpu-ubuntu2204-base", *install, *install]
  # Compared as the shell reads them (each line's words), whatever the quoting style.
  assert [shlex.split(line) for line in lines[:-1]] == [shlex.split(e) for e in expected]
  # The run: each override reaches bigbigan.main as one argument, unchanged, after the
  # local shell and the worker's shell have each read the line.
  remote = _remote_command(lines[-1])
  assert remote.startswith("cd ~/bigbigan && TFDS_DATA_DIR=gs://b/tfds ~/bigbigan-venv/bin/")
  argv = shlex.split(remote.split(" && ", 1)[1])
  assert argv == ["TFDS_DATA_DIR=gs://b/tfds", "~/bigbigan-venv/bin/python", "-m",
                  "bigbigan.main", "--config=configs/revnet4x.py", "--workdir=gs://b/run",
                  "--distributed", *OVERRIDES]


def test_tpu_pod_install_unpacks_the_tracked_files_and_a_second_install_the_same(tmp_path):
  out = _pod("--dry-run", "install", tmp_path=tmp_path)
  archive_command, _, unpack, _ = out.stdout.strip().splitlines()
  subprocess.run(shlex.split(archive_command), check=True)  # git archive HEAD, for real.
  home = tmp_path / "home"
  home.mkdir()
  tracked = sorted(subprocess.run(["git", "-C", str(REPO), "ls-tree", "-r", "--name-only",
                                   "HEAD"], capture_output=True, text=True,
                                  check=True).stdout.split())
  trees = []
  for _ in range(2):  # A second install over the first, with a file left in the tree.
    (home / "bigbigan.tar.gz").write_bytes((tmp_path / "bigbigan-bb.tar.gz").read_bytes())
    subprocess.run(["bash", "-c", _remote_command(unpack)], env={**os.environ,
                                                                 "HOME": str(home)}, check=True)
    tree = home / "bigbigan"
    trees.append(sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()))
    (tree / "stale.txt").write_text("from an older install")
    (tree / ".venv").mkdir()
  assert trees[0] == tracked and trees[1] == tracked
  assert not (home / "bigbigan.tar.gz").exists()


def test_tpu_pod_runs_chosen_steps_and_refuses_bad_arguments(tmp_path):
  out = _pod("--dry-run", "delete", tmp_path=tmp_path)
  assert out.stdout.strip() == "gcloud compute tpus tpu-vm delete bb --zone us-central2-b --quiet"
  missing = _pod("--dry-run", "run", tmp_path=tmp_path)
  assert missing.returncode == 2 and "run needs --config and --workdir" in missing.stderr
  unknown = _run("tpu_pod.sh", "--nmae", "bb")
  assert unknown.returncode == 2 and "unknown argument '--nmae'" in unknown.stderr
  # An override without a value is not passed on silently.
  bare = _run("tpu_pod.sh", "--name", "bb", "--zone", "z", "--config.remat")
  assert bare.returncode == 2 and "unknown argument '--config.remat'" in bare.stderr


def _gpu_venv(tmp_path):
  """A virtual environment whose Python finds a jax_cuda12_plugin (JAX's CUDA build)."""
  plugin = tmp_path / "site" / "jax_cuda12_plugin"
  plugin.mkdir(parents=True)
  (plugin / "__init__.py").write_text("")
  venv = tmp_path / "gpu venv"
  (venv / "bin").mkdir(parents=True)
  python = venv / "bin" / "python"
  python.write_text(f'#!/bin/sh\nPYTHONPATH={shlex.quote(str(tmp_path / "site"))} '
                    f'exec {shlex.quote(sys.executable)} "$@"\n')
  python.chmod(0o755)
  return venv


def test_slurm_dry_run_prints_the_batch_script_with_the_overrides(tmp_path):
  venv = _gpu_venv(tmp_path)
  out = _run("slurm_gpu.sh", "--nodes", "4", "--gpus-per-node", "8", "--config",
             "configs/revnet4x.py", "--workdir", "/shared/run", "--partition", "gpu",
             "--tfds_data_dir", "/shared/tfds", "--venv", venv, "--dry-run", *OVERRIDES)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  for expected in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1",
                   "#SBATCH --gpus-per-node=8", "#SBATCH --partition=gpu",
                   "#SBATCH --signal=TERM@120", f"cd {shlex.quote(str(REPO))}",
                   f"source {shlex.quote(str(venv / 'bin' / 'activate'))}",
                   "export TFDS_DATA_DIR=/shared/tfds"):
    assert expected in lines, expected
  assert shlex.split(lines[-1]) == [
      "srun", "--kill-on-bad-exit=1", "python", "-m", "bigbigan.main",
      "--config=configs/revnet4x.py", "--workdir=/shared/run", "--distributed", *OVERRIDES]
  missing = _run("slurm_gpu.sh", "--dry-run")
  assert missing.returncode == 2 and "--config and --workdir are required" in missing.stderr


@pytest.mark.parametrize("allow_cpu", [False, True])
def test_slurm_refuses_a_cpu_only_jax_unless_allowed(tmp_path, allow_cpu):
  # This environment's JAX is the CPU build (tests hide any GPU).
  venv = tmp_path / "cpu venv"
  (venv / "bin").mkdir(parents=True)
  (venv / "bin" / "python").symlink_to(sys.executable)
  out = _run("slurm_gpu.sh", "--config", "configs/revnet4x.py", "--workdir", "/shared/run",
             "--venv", venv, "--dry-run", *(["--allow_cpu"] if allow_cpu else []))
  if allow_cpu:
    assert out.returncode == 0, out.stderr
    assert shlex.split(out.stdout.strip().splitlines()[-1])[-2:] == ["--distributed",
                                                                     "--allow_cpu"]
  else:
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == (
        f"slurm_gpu.sh: {venv} has JAX for the CPU only: pip install -U \"jax[cuda12]\" in "
        "it (README, \"Install\"), or pass --allow_cpu")
  nowhere = _run("slurm_gpu.sh", "--config", "c", "--workdir", "w", "--venv",
                 tmp_path / "none", "--dry-run")
  assert nowhere.returncode == 2 and "no Python environment at" in nowhere.stderr
