#!/usr/bin/env bash
# Runs a list of runs on a Cloud TPU VM, from your machine: copies this checkout to every worker of the TPU, installs
# jax[tpu] and the project there (`pip install -e '.[tpu]'` in a venv, one step on all workers), then starts each
# run on all workers at once (one JAX job per run: LSTM_JAX_DISTRIBUTED=1, jax.distributed.initialize() finds the
# other workers by itself), one run after another. Runs are started independently: a failed run is reported and the
# next one starts; the script exits non-zero at the end if any failed. Workdirs go to a gs:// bucket, which every
# worker reads and writes (metrics, checkpoints; a re-run resumes from there).
#
# Usage (gcloud installed and logged in, the TPU VM created, e.g. `gcloud compute tpus tpu-vm create my-tpu
# --zone=us-central2-b --accelerator-type=v4-16 --version=tpu-ubuntu2204-base`):
#   TPU_NAME=my-tpu ZONE=us-central2-b BUCKET=gs://my-bucket/lstm_jax bash launch/tpu_vm.sh RUNS_FILE
# RUNS_FILE has one shell command per line (blank and '#' lines skipped), run in the checkout's copy on every
# worker with BUCKET set; each names its workdir on the bucket:
#   python -m lstm_jax.main --config=experiments/timemachine_lstm.py --workdir="$BUCKET/tm_lstm"
#   python -m lstm_jax.main --config=experiments/lstm.py:corpus=timemachine,cell=gru --workdir="$BUCKET/tm_gru"
# A sweep's runs (workdirs under the bucket, configs relative to the checkout):
#   python -m lstm_jax.commands.sweep --config experiments/lstm.py:corpus=timemachine --sweep hidden \
#       --root gs://my-bucket/lstm_jax/sweeps --dry_run | grep -v '^\[done\]' > runs.txt
#
# Variables:
#   TPU_NAME      name of the TPU VM (required)
#   ZONE          its zone (required)
#   BUCKET        gs:// path under which the runs' workdirs go (required; exported to the runs)
#   PROJECT       Google Cloud project (default: gcloud's configured one)
#   REMOTE_DIR    where the checkout goes on each worker, relative to the home directory (default: lstm_jax)
#   REMOTE_PYTHON Python that makes the venv on the workers (default: python3; the project needs 3.11 or newer,
#                 so on an Ubuntu 22.04 image say python3.11: it is installed with apt if missing)
#   INSTALL       the install step's command on the workers (default: the venv and pip install described above)
#   SKIP_INSTALL  1: do not copy and install again (the checkout on the workers is already current)
#   SRC           the checkout to copy (default: the one this script is in)
#   LOG_DIR       where each run's output goes here, run-<k>.log (default: runs/tpu_vm/<date-time>)
#   GCLOUD        the gcloud command (default: gcloud)
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
[[ $# -eq 1 && "$1" != -* ]] || usage
RUNS_FILE="$1"
: "${TPU_NAME:?set TPU_NAME to the name of the TPU VM}"
: "${ZONE:?set ZONE to the TPU VM zone}"
: "${BUCKET:?set BUCKET to a gs:// path for the workdirs}"
[[ "$BUCKET" == gs://* ]] || { echo "error: BUCKET must be a gs:// path, not '$BUCKET'" >&2; exit 2; }
[[ -r "$RUNS_FILE" ]] || { echo "error: cannot read the runs file $RUNS_FILE" >&2; exit 2; }
REMOTE_DIR="$(printf %q "${REMOTE_DIR:-lstm_jax}")"  # quoted for the workers' shell
REMOTE_PYTHON="${REMOTE_PYTHON:-python3}"
SRC="${SRC:-$(cd "$(dirname "$0")/.." && pwd)}"
LOG_DIR="${LOG_DIR:-runs/tpu_vm/$(date +%Y%m%d-%H%M%S)}"
GCLOUD="${GCLOUD:-gcloud}"
SKIP_INSTALL="${SKIP_INSTALL:-0}"
venv_line="{ [ -x .venv/bin/python ] || $REMOTE_PYTHON -m venv .venv || { sudo apt-get update -qq && sudo apt-get install -y -qq $REMOTE_PYTHON-venv && $REMOTE_PYTHON -m venv .venv; }; }"
INSTALL="${INSTALL:-cd ~/$REMOTE_DIR && $venv_line && . .venv/bin/activate && pip install -q -U pip && pip install -q -e '.[tpu]' && python -c 'import jax; print(\"worker\", jax.process_index(), jax.local_devices(), \"of\", jax.device_count())'}"

gcloud_flags=("--zone=$ZONE")
[[ -z "${PROJECT:-}" ]] || gcloud_flags+=("--project=$PROJECT")
on_all_workers() {  # $1: the command to run on every worker at once
  "$GCLOUD" compute tpus tpu-vm ssh "$TPU_NAME" "${gcloud_flags[@]}" --worker=all --command="$1"
}

# The runs, each with its workdir on the bucket.
runs=()
while IFS= read -r line || [[ -n "$line" ]]; do
  read -r first _ <<< "$line" || true
  [[ -z "$first" || "$first" == "#"* ]] && continue
  # shellcheck disable=SC2016  # the literal text $BUCKET, expanded on the workers
  if [[ "$line" != *gs://* && "$line" != *'$BUCKET'* && "$line" != *'${BUCKET}'* ]]; then
    echo "error: this run's workdir is not on the bucket (use --workdir=\"\$BUCKET/NAME\"): $line" >&2
    exit 2
  fi
  runs+=("$line")
done < "$RUNS_FILE"
if [[ ${#runs[@]} -eq 0 ]]; then
  echo "Nothing to run in $RUNS_FILE."
  exit 0
fi
mkdir -p "$LOG_DIR"

if [[ "$SKIP_INSTALL" != 1 ]]; then
  pack="$(mktemp -t lstm_jax-XXXXXX.tar.gz)"
  trap 'rm -f "$pack"' EXIT
  echo "== copying $SRC to every worker of $TPU_NAME (~/$REMOTE_DIR)"
  tar -czf "$pack" -C "$SRC" --exclude=./.git --exclude='./.venv*' --exclude=./runs --exclude=./build \
      --exclude='*.egg-info' --exclude=__pycache__ .
  "$GCLOUD" compute tpus tpu-vm scp "$pack" "$TPU_NAME:lstm_jax.tar.gz" "${gcloud_flags[@]}" --worker=all
  echo "== installing jax[tpu] and the project on every worker"
  if ! on_all_workers "mkdir -p ~/$REMOTE_DIR && tar -xzf ~/lstm_jax.tar.gz -C ~/$REMOTE_DIR && $INSTALL" 2>&1 \
      | tee "$LOG_DIR/install.log"; then
    echo "error: the install failed on a worker (log: $LOG_DIR/install.log); no run was started" >&2
    exit 1
  fi
fi

failed=()
for k in "${!runs[@]}"; do
  n=$((k + 1))
  run="${runs[$k]}"
  echo "== run $n/${#runs[@]} on all workers: $run"
  remote="cd ~/$REMOTE_DIR && . .venv/bin/activate && export BUCKET=$(printf %q "$BUCKET") LSTM_JAX_DISTRIBUTED=1 && $run"
  status=0
  on_all_workers "$remote" 2>&1 | tee "$LOG_DIR/run-$n.log" || status=$?
  if [[ $status -ne 0 ]]; then
    echo "== FAILED run $n (exit $status), log: $LOG_DIR/run-$n.log"
    failed+=("run $n (exit $status): $run")
  fi
done

echo "${#runs[@]} runs, $((${#runs[@]} - ${#failed[@]})) succeeded, ${#failed[@]} failed; logs in $LOG_DIR"
if [[ ${#failed[@]} -gt 0 ]]; then
  printf '  FAILED %s\n' "${failed[@]}"
  exit 1
fi
