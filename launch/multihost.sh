#!/usr/bin/env bash
# One multi-process JAX job: starts NUM_LOCAL processes of `python -m lstm_jax.main --config=CONFIG
# --workdir=WORKDIR [ARGS...]` on this machine, each with LSTM_JAX_DISTRIBUTED=1 and its coordinator address,
# process count and process id (LSTM_JAX_COORDINATOR=host:port, LSTM_JAX_NUM_PROCESSES, LSTM_JAX_PROCESS_ID),
# which lstm_jax.main passes to jax.distributed.initialize(coordinator_address=..., num_processes=...,
# process_id=...). The processes form one job: every minibatch is split over the devices of all of them, and only
# process 0 writes metrics and config.json. Waits for all; exits non-zero if any failed (then it stops the others,
# which could only wait for the missing one).
#
# Usage:
#   bash launch/multihost.sh NUM_LOCAL CONFIG WORKDIR [ARGS...]
#   bash launch/multihost.sh 2 experiments/timemachine_lstm.py runs/mh          # try it: 2 processes, 127.0.0.1
#   DRY_RUN=1 bash launch/multihost.sh 2 experiments/timemachine_lstm.py runs/mh   # print the commands only
# On CPU each process has one device unless XLA_FLAGS=--xla_force_host_platform_device_count=N gives it N; on a
# machine with several GPUs, SPLIT_GPUS=1 gives local process i the GPU i (CUDA_VISIBLE_DEVICES=i).
#
# Across hosts: run it once on every host, with the same COORDINATOR (host 0's address and a free port), the total
# NUM_PROCESSES and each host's FIRST_PROCESS_ID, and a WORKDIR that every host sees (a shared file system or a
# gs:// bucket). Two hosts with one process each, host0 being the coordinator:
#   host0$ COORDINATOR=host0:12355 NUM_PROCESSES=2 FIRST_PROCESS_ID=0 bash launch/multihost.sh 1 CONFIG WORKDIR
#   host1$ COORDINATOR=host0:12355 NUM_PROCESSES=2 FIRST_PROCESS_ID=1 bash launch/multihost.sh 1 CONFIG WORKDIR
# (Under SLURM or on a TPU VM, `LSTM_JAX_DISTRIBUTED=1 python -m lstm_jax.main ...` on every node is enough:
# jax.distributed.initialize() finds the coordinator there by itself; see launch/README.md.)
#
# Variables:
#   COORDINATOR       host:port of process 0 (default: 127.0.0.1 and a free port)
#   NUM_PROCESSES     processes in the whole job, on all hosts (default: NUM_LOCAL)
#   FIRST_PROCESS_ID  process id of this host's first process (default: 0); its processes get the next ids
#   LOG_DIR           per-process logs, process-<id>.log (default: WORKDIR.logs beside WORKDIR, or
#                     runs/multihost-logs when WORKDIR is a gs:// path)
#   PYTHON            the Python that runs lstm_jax.main (default: python)
#   SPLIT_GPUS        1: local process i sees only GPU i (default: 0, every process sees every device)
#   DRY_RUN           1: print each process's command and environment, start nothing
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 3 ]] || usage
NUM_LOCAL="$1" CONFIG="$2" WORKDIR="$3"
shift 3
[[ "$NUM_LOCAL" =~ ^[1-9][0-9]*$ ]] || { echo "error: NUM_LOCAL must be a positive number, not '$NUM_LOCAL'" >&2; exit 2; }

PYTHON="${PYTHON:-python}"
NUM_PROCESSES="${NUM_PROCESSES:-$NUM_LOCAL}"
FIRST_PROCESS_ID="${FIRST_PROCESS_ID:-0}"
SPLIT_GPUS="${SPLIT_GPUS:-0}"
DRY_RUN="${DRY_RUN:-0}"
if [[ "$WORKDIR" == gs://* ]]; then
  LOG_DIR="${LOG_DIR:-runs/multihost-logs}"
else
  LOG_DIR="${LOG_DIR:-${WORKDIR%/}.logs}"
fi
if [[ -z "${COORDINATOR:-}" ]]; then
  PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
          2>/dev/null || echo $((20000 + RANDOM % 20000)))"
  COORDINATOR="127.0.0.1:$PORT"
fi
if (( FIRST_PROCESS_ID + NUM_LOCAL > NUM_PROCESSES )); then
  echo "error: processes $FIRST_PROCESS_ID..$((FIRST_PROCESS_ID + NUM_LOCAL - 1)) do not fit in NUM_PROCESSES=$NUM_PROCESSES" >&2
  exit 2
fi

command=("$PYTHON" -m lstm_jax.main "--config=$CONFIG" "--workdir=$WORKDIR" "$@")
echo "$NUM_LOCAL of $NUM_PROCESSES processes (ids $FIRST_PROCESS_ID..$((FIRST_PROCESS_ID + NUM_LOCAL - 1))), coordinator $COORDINATOR"
[[ "$DRY_RUN" == 1 ]] || mkdir -p "$LOG_DIR"

pids=()
stop_all() {
  for pid in "${pids[@]+"${pids[@]}"}"; do kill "$pid" 2>/dev/null || true; done
}
trap 'stop_all; echo "interrupted: stopped the processes" >&2; exit 130' INT TERM

for ((i = 0; i < NUM_LOCAL; i++)); do
  id=$((FIRST_PROCESS_ID + i))
  env=(LSTM_JAX_DISTRIBUTED=1 "LSTM_JAX_COORDINATOR=$COORDINATOR" "LSTM_JAX_NUM_PROCESSES=$NUM_PROCESSES"
       "LSTM_JAX_PROCESS_ID=$id")
  [[ "$SPLIT_GPUS" == 1 ]] && env+=("CUDA_VISIBLE_DEVICES=$i")
  if [[ "$DRY_RUN" == 1 ]]; then
    printf 'process %s: env' "$id"
    printf ' %q' "${env[@]}" "${command[@]}"
    printf '\n'
    continue
  fi
  echo "== process $id: log $LOG_DIR/process-$id.log"
  env "${env[@]}" "${command[@]}" > "$LOG_DIR/process-$id.log" 2>&1 &
  pids+=("$!")
done
[[ "$DRY_RUN" == 1 ]] && exit 0

# Wait for all; the first failure stops the others (they would wait for it until their timeout).
failed=()
stopped=0
remaining=${#pids[@]}
declare -A done_pid=()
while (( remaining > 0 )); do
  for i in "${!pids[@]}"; do
    pid="${pids[$i]}"
    [[ -z "${done_pid[$pid]:-}" ]] || continue
    kill -0 "$pid" 2>/dev/null && continue
    status=0
    wait "$pid" || status=$?
    done_pid[$pid]=1
    remaining=$((remaining - 1))
    id=$((FIRST_PROCESS_ID + i))
    if (( status != 0 )); then
      failed+=("$id")
      if (( stopped )); then
        echo "== process $id stopped (exit $status)" >&2
        continue
      fi
      echo "== FAILED process $id (exit $status); last lines of $LOG_DIR/process-$id.log:" >&2
      tail -n 20 "$LOG_DIR/process-$id.log" >&2 || true
      echo "== stopping the other processes" >&2
      stopped=1
      stop_all
    else
      echo "== process $id done"
    fi
  done
  (( remaining == 0 )) || sleep 1
done

if (( ${#failed[@]} > 0 )); then
  echo "multi-process job failed: process(es) ${failed[*]} (logs in $LOG_DIR)" >&2
  exit 1
fi
echo "all $NUM_LOCAL processes finished; output of process $FIRST_PROCESS_ID:"
tail -n 5 "$LOG_DIR/process-$FIRST_PROCESS_ID.log"
