#!/usr/bin/env bash
# Runs a bigbigan config on a Cloud TPU VM pod slice: create the slice, install this checkout
# on every worker, start the same command on all of them (one JAX process per host,
# `--distributed` finds the pod's coordinator itself). Rerunning `run` resumes from the
# latest checkpoint in the workdir; a preempted slice is recreated with `create` first.
#
#   launch/tpu_pod.sh --name bigbigan --zone us-central2-b --accelerator v4-128 \
#       --config configs/revnet4x.py --workdir gs://BUCKET/runs/revnet4x \
#       [--tfds_data_dir gs://BUCKET/tfds] [--dry-run] [STEP...]
#
# STEPs: create, install, run (all three by default), delete. --dry-run prints the commands.
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

NAME="" ZONE="" ACCELERATOR="" CONFIG="" WORKDIR="" DATA_DIR="" DRY_RUN=0
VERSION="tpu-ubuntu2204-base"
STEPS=()
while (($#)); do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --accelerator) ACCELERATOR="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    --workdir) WORKDIR="$2"; shift 2 ;;
    --tfds_data_dir) DATA_DIR="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    create|install|run|delete) STEPS+=("$1"); shift ;;
    *) echo "tpu_pod.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
((${#STEPS[@]})) || STEPS=(create install run)
for required in NAME ZONE; do
  [[ -n "${!required}" ]] || { echo "tpu_pod.sh: --${required,,} is required" >&2; exit 2; }
done

# Prints the command (arguments with spaces or shell characters in single quotes); runs it
# unless --dry-run.
do_cmd() {
  local shown=() arg
  for arg in "$@"; do
    if [[ "$arg" =~ [^A-Za-z0-9_./:=@%+,-] ]]; then shown+=("'${arg//\'/\'\\\'\'}'"); else shown+=("$arg"); fi
  done
  echo "${shown[*]}"
  ((DRY_RUN)) || "$@"
}

ssh_all() {
  do_cmd gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "$1"
}

for step in "${STEPS[@]}"; do
  case "$step" in
    create)
      [[ -n "$ACCELERATOR" ]] || { echo "tpu_pod.sh: create needs --accelerator" >&2; exit 2; }
      do_cmd gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" \
        --accelerator-type "$ACCELERATOR" --version "$VERSION" ;;
    install)
      # This checkout, not a remote branch: what runs is what was tested here.
      do_cmd gcloud compute tpus tpu-vm scp --recurse --zone "$ZONE" --worker=all \
        "$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)" "$NAME":bigbigan
      ssh_all "pip install -q -e ./bigbigan 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html" ;;
    run)
      [[ -n "$CONFIG" && -n "$WORKDIR" ]] || {
        echo "tpu_pod.sh: run needs --config and --workdir (gs://... so every host sees it)" >&2
        exit 2; }
      ssh_all "cd bigbigan && ${DATA_DIR:+TFDS_DATA_DIR=$DATA_DIR }python -m bigbigan.main --config=$CONFIG --workdir=$WORKDIR --distributed" ;;
    delete)
      do_cmd gcloud compute tpus tpu-vm delete "$NAME" --zone "$ZONE" --quiet ;;
  esac
done
