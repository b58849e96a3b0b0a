#!/usr/bin/env bash
# Runs a list of runs on this machine's GPUs, one process per GPU: each run sees only its GPU
# (CUDA_VISIBLE_DEVICES=i, XLA_PYTHON_CLIENT_PREALLOCATE=false) and a GPU takes the next run from the queue as soon
# as its run ends. Each run's output goes to its own log; at the end the failed runs are listed and the script
# exits non-zero if any failed (the others still ran).
#
# Usage (from the checkout, with the environment activated):
#   bash launch/local_gpus.sh RUNS_FILE            # one shell command per line; blank and '#' lines are skipped
#   bash launch/local_gpus.sh --config experiments/lstm.py:corpus=timemachine --sweep hidden --root runs/sweeps
#       # arguments starting with '-': a sweep (flags of `python -m lstm_jax.commands.sweep`), its runs that have
#       # not finished yet (the sweep's --dry_run lines without "[done]")
# A runs file is e.g.
#   python -m lstm_jax.main --config=experiments/timemachine_lstm.py --workdir=runs/tm_lstm
#   python -m lstm_jax.main --config=experiments/lstm.py:corpus=timemachine,cell=gru --workdir=runs/tm_gru
#
# Variables:
#   GPUS       GPU ids to use, comma-separated (e.g. 0,2,3); default: NUM_GPUS, else CUDA_VISIBLE_DEVICES, else
#              every GPU that `nvidia-smi -L` lists
#   NUM_GPUS   number of GPUs (ids 0..NUM_GPUS-1), instead of asking nvidia-smi
#   LOG_DIR    where the per-run logs go (default: runs/local_gpus/<date-time>); run k logs to LOG_DIR/run-k.log
#   PYTHON     the Python that expands a sweep (default: python)
#   POLL_SEC   how often a free GPU is looked for, in seconds (default: 1)
set -euo pipefail

PYTHON="${PYTHON:-python}"
POLL_SEC="${POLL_SEC:-1}"
LOG_DIR="${LOG_DIR:-runs/local_gpus/$(date +%Y%m%d-%H%M%S)}"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 1 ]] || usage
[[ "$1" == "-h" || "$1" == "--help" ]] && usage

# The runs: one per line that is neither blank nor a comment.
runs=()
if [[ "$1" == -* ]]; then
  listing="$("$PYTHON" -m lstm_jax.commands.sweep "$@" --dry_run)"
  while IFS= read -r line; do
    [[ "$line" == "[done] "* ]] || runs+=("$line")
  done <<< "$listing"
else
  [[ $# -eq 1 ]] || usage
  [[ -r "$1" ]] || { echo "error: cannot read the runs file $1" >&2; exit 2; }
  while IFS= read -r line || [[ -n "$line" ]]; do
    runs+=("$line")
  done < "$1"
fi
selected=()
for line in "${runs[@]+"${runs[@]}"}"; do
  read -r first _ <<< "$line" || true
  [[ -z "$first" || "$first" == "#"* ]] || selected+=("$line")
done
runs=("${selected[@]+"${selected[@]}"}")
if [[ ${#runs[@]} -eq 0 ]]; then
  echo "Nothing to run."
  exit 0
fi

# The GPUs.
if [[ -n "${GPUS:-}" ]]; then
  IFS=', ' read -r -a gpus <<< "$GPUS"
elif [[ -n "${NUM_GPUS:-}" ]]; then
  gpus=()
  for ((i = 0; i < NUM_GPUS; i++)); do gpus+=("$i"); done
elif [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
  IFS=', ' read -r -a gpus <<< "$CUDA_VISIBLE_DEVICES"
else
  if ! listing="$(nvidia-smi -L 2>/dev/null)"; then
    echo "error: nvidia-smi -L lists no GPU; set GPUS=0,1 or NUM_GPUS=2 to say which to use" >&2
    exit 2
  fi
  gpus=()
  while IFS= read -r line; do
    [[ "$line" == GPU* ]] && gpus+=("${#gpus[@]}")
  done <<< "$listing"
fi
if [[ ${#gpus[@]} -eq 0 ]]; then
  echo "error: no GPU to run on (GPUS, NUM_GPUS, CUDA_VISIBLE_DEVICES and nvidia-smi -L name none)" >&2
  exit 2
fi

mkdir -p "$LOG_DIR"
echo "${#runs[@]} runs on ${#gpus[@]} GPUs (${gpus[*]}); logs in $LOG_DIR"

declare -A pid_of=() run_of=()   # per GPU slot: the process running on it and the run's number
failed=()
stop() {
  for pid in "${pid_of[@]+"${pid_of[@]}"}"; do kill "$pid" 2>/dev/null || true; done
  echo "interrupted: stopped the running runs" >&2
  exit 130
}
trap stop INT TERM

finish() {  # $1: a GPU slot whose process has ended
  local slot="$1" status=0 k
  k="${run_of[$slot]}"
  wait "${pid_of[$slot]}" || status=$?
  unset "pid_of[$slot]" "run_of[$slot]"
  if [[ $status -eq 0 ]]; then
    echo "== done   run $k on GPU ${gpus[$slot]}"
  else
    echo "== FAILED run $k on GPU ${gpus[$slot]} (exit $status), log: $LOG_DIR/run-$k.log"
    failed+=("run $k (exit $status): ${runs[$((k - 1))]}")
  fi
}

next=0
while [[ $next -lt ${#runs[@]} || ${#pid_of[@]} -gt 0 ]]; do
  for slot in "${!gpus[@]}"; do
    if [[ -n "${pid_of[$slot]:-}" ]] && ! kill -0 "${pid_of[$slot]}" 2>/dev/null; then
      finish "$slot"
    fi
    if [[ -z "${pid_of[$slot]:-}" && $next -lt ${#runs[@]} ]]; then
      k=$((next + 1))
      run="${runs[$next]}"
      next=$k
      log="$LOG_DIR/run-$k.log"
      printf '# GPU %s: %s\n' "${gpus[$slot]}" "$run" > "$log"
      echo "== start  run $k/${#runs[@]} on GPU ${gpus[$slot]}: $run"
      CUDA_VISIBLE_DEVICES="${gpus[$slot]}" XLA_PYTHON_CLIENT_PREALLOCATE=false bash -c "$run" >> "$log" 2>&1 &
      pid_of[$slot]=$!
      run_of[$slot]=$k
    fi
  done
  [[ ${#pid_of[@]} -gt 0 ]] && sleep "$POLL_SEC"
done

echo "${#runs[@]} runs, $((${#runs[@]} - ${#failed[@]})) succeeded, ${#failed[@]} failed."
if [[ ${#failed[@]} -gt 0 ]]; then
  printf '  FAILED %s\n' "${failed[@]}"
  exit 1
fi
