#!/usr/bin/env bash
# Submits a bigbigan config to a SLURM GPU cluster: one task per node, each a JAX process
# that sees all of its node's GPUs. `--distributed` makes jax.distributed.initialize() read
# the coordinator, process count and process index from SLURM's environment; the
# coordinator is the first node of the allocation. Resubmitting resumes from the workdir.
#
#   launch/slurm_gpu.sh --nodes 4 --gpus-per-node 8 --config configs/revnet4x.py \
#       --workdir /shared/runs/revnet4x [--tfds_data_dir /shared/tfds] [--partition gpu] \
#       [--time 48:00:00] [--venv PATH] [--dry-run]
#
# --dry-run prints the batch script instead of submitting it.
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

NODES=1 GPUS=8 CONFIG="" WORKDIR="" DATA_DIR="" PARTITION="" TIME="48:00:00" DRY_RUN=0
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
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "slurm_gpu.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$CONFIG" && -n "$WORKDIR" ]] || {
  echo "slurm_gpu.sh: --config and --workdir are required (a workdir every node sees)" >&2
  exit 2; }
REPO="$(cd "$(dirname "$0")/.." && pwd)"

script="#!/usr/bin/env bash
#SBATCH --job-name=bigbigan
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$GPUS
#SBATCH --time=$TIME
#SBATCH --signal=TERM@120
${PARTITION:+#SBATCH --partition=$PARTITION
}set -euo pipefail
source $VENV/bin/activate
cd $REPO
${DATA_DIR:+export TFDS_DATA_DIR=$DATA_DIR
}# SIGTERM 120 s before the time limit: the trainer saves a checkpoint and exits.
srun --kill-on-bad-exit=1 python -m bigbigan.main --config=$CONFIG --workdir=$WORKDIR --distributed"

if ((DRY_RUN)); then
  echo "$script"
else
  sbatch <<<"$script"
fi
