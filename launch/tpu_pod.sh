#!/usr/bin/env bash
# Runs a bigbigan config on a Cloud TPU VM pod slice: create the slice, install this checkout
# on every worker, start the same command on all of them (one JAX process per host,
# `--distributed` finds the pod's coordinator itself). Rerunning `run` resumes from the
# latest checkpoint in the workdir; a preempted slice is recreated with `create` first.
#
#   launch/tpu_pod.sh --name bigbigan --zone us-central2-b --accelerator v4-128 \
#       --config configs/revnet4x.py --workdir gs://BUCKET/runs/revnet4x \
#       [--tfds_data_dir gs://BUCKET/tfds] [--version RUNTIME] [--python 3.12] [--dry-run] \
#       [STEP...] [--config.FIELD=VALUE ...]
#
# STEPs: create, install, run (all three by default), delete. --dry-run prints the commands.
# Every --config.FIELD=VALUE (and --compilation_cache=DIR|off) is passed to bigbigan.main on
# every worker unchanged.
set -euo pipefail
source "$(dirname "$0")/quote.sh"

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

NAME="" ZONE="" ACCELERATOR="" CONFIG="" WORKDIR="" DATA_DIR="" DRY_RUN=0
# The runtime for v4 and earlier; v5e: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e:
# v2-alpha-tpuv6e. Their system Python is 3.10, older than bigbigan's (3.11+): the install
# makes a virtual environment from a Python that uv fetches, whatever the image has.
VERSION="tpu-ubuntu2204-base"
PYTHON="3.12"
STEPS=() OVERRIDES=()
while (($#)); do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --accelerator) ACCELERATOR="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    --workdir) WORKDIR="$2"; shift 2 ;;
    --tfds_data_dir) DATA_DIR="$2"; shift 2 ;;
    --config.*=*|--compilation_cache=*) OVERRIDES+=("$1"); shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    create|install|run|delete) STEPS+=("$1"); shift ;;
    *) echo "tpu_pod.sh: unknown argument '$1' (see --help; overrides are --config.FIELD=VALUE)" >&2
       exit 2 ;;
  esac
done
((${#STEPS[@]})) || STEPS=(create install run)
for required in NAME ZONE; do
  [[ -n "${!required}" ]] || { echo "tpu_pod.sh: --${required,,} is required" >&2; exit 2; }
done

# Prints the command, each argument quoted as the shell would need it; runs it unless --dry-run.
do_cmd() {
  local shown=() arg
  for arg in "$@"; do shown+=("$(quote "$arg")"); done
  echo "${shown[*]}"
  ((DRY_RUN)) || "$@"
}

ssh_all() {
  do_cmd gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "$1"
}

REPO="$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"
ARCHIVE="${TMPDIR:-/tmp}/bigbigan-$NAME.tar.gz"
# On each worker: the project's files in ~/bigbigan (replaced whole at each install, so a
# second install gives the same tree) and its environment in ~/bigbigan-venv (kept, so a
# second install only updates it).
REMOTE_TREE="bigbigan" REMOTE_VENV="bigbigan-venv"

for step in "${STEPS[@]}"; do
  case "$step" in
    create)
      [[ -n "$ACCELERATOR" ]] || { echo "tpu_pod.sh: create needs --accelerator" >&2; exit 2; }
      do_cmd gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" \
        --accelerator-type "$ACCELERATOR" --version "$VERSION" ;;
    install)
      # The committed tree of this checkout, tracked files only (no .venv, .git or
      # workdirs): what runs is what was tested here.
      if [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]]; then
        echo "tpu_pod.sh: warning: uncommitted changes are not installed (HEAD is)" >&2
      fi
      do_cmd git -C "$REPO" archive --format=tar.gz --output="$ARCHIVE" HEAD
      do_cmd gcloud compute tpus tpu-vm scp --zone "$ZONE" --worker=all "$ARCHIVE" \
        "$NAME":bigbigan.tar.gz
      ssh_all "cd ~ && rm -rf $REMOTE_TREE && mkdir $REMOTE_TREE \
&& tar -xzf bigbigan.tar.gz -C $REMOTE_TREE && rm bigbigan.tar.gz"
      # A Python that uv downloads (the image's 3.10 is older than bigbigan's 3.11+), in a
      # virtual environment that a second install reuses.
      ssh_all "cd ~ && python3 -m pip install -q --user --upgrade uv \
&& ~/.local/bin/uv venv -q --allow-existing --python $PYTHON $REMOTE_VENV \
&& ~/.local/bin/uv pip install -q --python $REMOTE_VENV/bin/python \
-e './$REMOTE_TREE[train]' 'jax[tpu]' \
&& $REMOTE_VENV/bin/python -c 'import jax; print(jax.process_index(), jax.devices())'" ;;
    run)
      [[ -n "$CONFIG" && -n "$WORKDIR" ]] || {
        echo "tpu_pod.sh: run needs --config and --workdir (gs://... so every host sees it)" >&2
        exit 2; }
      command="cd ~/$REMOTE_TREE && "
      [[ -z "$DATA_DIR" ]] || command+="TFDS_DATA_DIR=$(quote "$DATA_DIR") "
      command+="~/$REMOTE_VENV/bin/python -m bigbigan.main --config=$(quote "$CONFIG")"
      command+=" --workdir=$(quote "$WORKDIR") --distributed"
      for override in "${OVERRIDES[@]}"; do command+=" $(quote "$override")"; done
      ssh_all "$command" ;;
    delete)
      do_cmd gcloud compute tpus tpu-vm delete "$NAME" --zone "$ZONE" --quiet ;;
  esac
done
