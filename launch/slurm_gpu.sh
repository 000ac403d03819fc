#!/usr/bin/env bash
# Submits a bigbigan config to a SLURM GPU cluster: one task per node, each a JAX process
# that sees all of its node's GPUs. `--distributed` makes jax.distributed.initialize() read
# the coordinator, process count and process index from SLURM's environment; the
# coordinator is the first node of the allocation. Resubmitting resumes from the workdir.
#
#   launch/slurm_gpu.sh --nodes 4 --gpus-per-node 8 --config configs/revnet4x.py \
#       --workdir /shared/runs/revnet4x [--tfds_data_dir /shared/tfds] [--partition gpu] \
#       [--time 48:00:00] [--venv PATH] [--allow_cpu] [--dry-run] [--config.FIELD=VALUE ...]
#
# --venv: a virtual environment with bigbigan and JAX for GPUs (README, "Install"); the
# checkout's .venv by default. Every --config.FIELD=VALUE (and --compilation_cache=DIR|off)
# is passed to bigbigan.main unchanged. --dry-run prints the batch script instead of
# submitting it.
set -euo pipefail
source "$(dirname "$0")/quote.sh"

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

NODES=1 GPUS=8 CONFIG="" WORKDIR="" DATA_DIR="" PARTITION="" TIME="48:00:00" DRY_RUN=0
ALLOW_CPU=0 OVERRIDES=()
VENV="$(cd "$(dirname "$0")/.." && pwd)/.venv"
while (($#)); do
  case "$1" in
    --nodes) NODES="$2"; shift 2 ;;
    --gpus-per-node) GPUS="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    --workdir) WORKDIR="$2"; shift 2 ;;
    --tfds_data_dir) DATA_DIR="$2"; shift 2 ;;
    --partition) PARTITION="$2"; shift 2 ;;
    --time) TIME="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --allow_cpu) ALLOW_CPU=1; shift ;;
    --config.*=*|--compilation_cache=*) OVERRIDES+=("$1"); shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "slurm_gpu.sh: unknown argument '$1' (see --help; overrides are --config.FIELD=VALUE)" >&2
       exit 2 ;;
  esac
done
[[ -n "$CONFIG" && -n "$WORKDIR" ]] || {
  echo "slurm_gpu.sh: --config and --workdir are required (a workdir every node sees)" >&2
  exit 2; }
REPO="$(cd "$(dirname "$0")/.." && pwd)"

# A GPU cluster job on JAX's CPU build would run, slowly, without a word: the environment
# must have JAX's CUDA plugin, unless --allow_cpu says the CPU is meant.
[[ -x "$VENV/bin/python" ]] || {
  echo "slurm_gpu.sh: no Python environment at $VENV: make one (README, \"Install\", GPU) or pass --venv PATH" >&2
  exit 2; }
if ((!ALLOW_CPU)) && ! "$VENV/bin/python" -c 'import importlib.util, sys
sys.exit(not any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin")))'; then
  echo "slurm_gpu.sh: $VENV has JAX for the CPU only: pip install -U \"jax[cuda12]\" in it (README, \"Install\"), or pass --allow_cpu" >&2
  exit 2
fi

command="python -m bigbigan.main --config=$(quote "$CONFIG") --workdir=$(quote "$WORKDIR") --distributed"
((!ALLOW_CPU)) || command+=" --allow_cpu"
for override in "${OVERRIDES[@]}"; do command+=" $(quote "$override")"; done

script="#!/usr/bin/env bash
#SBATCH --job-name=bigbigan
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$GPUS
#SBATCH --time=$TIME
#SBATCH --signal=TERM@120
${PARTITION:+#SBATCH --partition=$PARTITION
}set -euo pipefail
source $(quote "$VENV/bin/activate")
cd $(quote "$REPO")
${DATA_DIR:+export TFDS_DATA_DIR=$(quote "$DATA_DIR")
}# SIGTERM 120 s before the time limit: the trainer saves a checkpoint and exits.
srun --kill-on-bad-exit=1 $command"

if ((DRY_RUN)); then
  echo "$script"
else
  sbatch <<<"$script"
fi
