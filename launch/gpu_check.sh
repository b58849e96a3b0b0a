#!/usr/bin/env bash
# GPU check and benchmark in one prepared command, for a bare GPU machine that cannot reach a package registry:
#   1. the kernel tests, compiled for the GPU (the persistent LSTM with its grid barrier, Pallas vs the hand-written
#      backward, cuDNN model, recurrence choice),
#      with float32 dots in IEEE float32 (JAX_DEFAULT_MATMUL_PRECISION=highest: no TF32);
#   2. the train-step benchmark, interleaved: W1 (1x256, batch 32, 35 steps), W2 (2x512, batch 64, 100 steps),
#      W4 (2x1024, batch 128, 100 steps) for pallas / pallas bf16 / fused_vjp / fused_vjp bf16 / scan / cuDNN /
#      Flax OptimizedLSTMCell / PyTorch nn.LSTM on CUDA (tokens/s, x PyTorch, x cuDNN, % of the matmul rate,
#      compile s, and the estimate of lstm_jax/estimates beside each scratch row: the model checked);
#   3. a population of 16 W1 configs as one program against the same 16 runs one after another;
#   4. the layer-level recurrence comparison (launch/gpu_benchmark.sh), if time is left.
# Everything lands in $OUT (default /tmp/lstm_jax_gpu_check): gpu_check.md (all tables), one log per part.
#
# Usage, from the repository root:
#   bash launch/gpu_check.sh                          # on the GPU machine (jax with CUDA)
#   LSTM_JAX_BENCH_SMOKE=1 bash launch/gpu_check.sh   # anywhere: tiny shapes, interpret-mode kernels (checks wiring)
# Variables:
#   OUT               where results go
#   WHEELS            folder of wheels to install first without an index (default .whl, if it exists): the lent GPU
#                     machine lacks ml_collections and tensorboardX. Fetch them here with
#                     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#                         ml_collections==1.1.0 tensorboardX==2.6.5
#   SKIP_TESTS=1      skip part 1
#   BUDGET_S          seconds for all parts (default 270: under five minutes); each part gets a share by `timeout`
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/lstm_jax_gpu_check}"
WHEELS="${WHEELS:-.whl}"
BUDGET_S="${BUDGET_S:-270}"
SMOKE="${LSTM_JAX_BENCH_SMOKE:-0}"
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}"  # leave room for PyTorch
if [[ -d "$WHEELS" ]] && compgen -G "$WHEELS/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/lstm_jax_site \
    "$WHEELS"/*.whl
  export PYTHONPATH="/tmp/lstm_jax_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$SECONDS
report="$OUT/gpu_check.md"
SMOKE="$SMOKE" python3 - > "$report" <<'PY'
import os, platform

import jax

device = jax.devices()[0]
smoke = "SMOKE, " if os.environ["SMOKE"] == "1" else ""
print(f"# lstm_jax GPU check ({smoke}{device.platform} {device.device_kind}, jax {jax.__version__}, "
      f"python {platform.python_version()})")
PY
failed=()

part() {  # part NAME SHARE_OF_REMAINING COMMAND...: runs COMMAND under a timeout, its output to OUT/NAME.log
  local name=$1 share=$2
  shift 2
  local left=$((BUDGET_S - (SECONDS - start)))
  local limit=$((left * share / 100))
  if ((limit < 10)); then
    printf '\n## %s\nskipped: time budget\n' "$name" >> "$report"
    return
  fi
  echo "== $name (up to ${limit} s)"
  local status=0
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1 || status=$?
  tail -n 40 "$OUT/$name.log"
  if ((status != 0)); then
    failed+=("$name (exit $status$( ((status == 124)) && echo ': timed out'))")
  fi
  { printf '\n## %s (exit %d, %d s so far)\n\n' "$name" "$status" $((SECONDS - start)); grep -E '^\||passed|failed|error' \
    "$OUT/$name.log" || true; } >> "$report"
}

if [[ "$SMOKE" == "1" ]]; then
  tests=(tests/test_kernels.py -k "lstm and not members and not persistent")
  workloads=tiny
  implementations=("--implementations=fused_vjp,pallas,scan")
  population=(--population_sizes=2 --steps=2 --rounds=1 --hidden_size=16 --batch_size=4 --num_steps=5)
else
  tests=(tests/test_kernels.py tests/test_cudnn_model.py tests/test_cudnn_interop.py tests/test_recurrence_choice.py
         tests/test_matmul_dtype.py)
  workloads=W1,W2,W4
  implementations=()
  population=(--population_sizes=16 --steps=20 --rounds=3)
fi
if [[ "${SKIP_TESTS:-0}" != "1" ]]; then
  # Float32 dots as IEEE float32 in XLA and in the Triton kernels alike (the GPU default allows TF32), so the tests'
  # float32 tolerances mean what they do on a CPU; the benchmarks below run at the default precision, as cuDNN does.
  part tests 25 env JAX_DEFAULT_MATMUL_PRECISION=highest python3 -m pytest -q -p no:cacheprovider -m "not slow" \
    "${tests[@]}"
fi
part train_step 65 python3 -m lstm_jax.commands.benchmark --workloads="$workloads" "${implementations[@]}" --quick \
  --markdown="$OUT/train_step.md"
part population 60 python3 -m lstm_jax.commands.benchmark_population "${population[@]}"
part recurrence 90 env LSTM_JAX_BENCH_BUDGET_S=$((BUDGET_S - (SECONDS - start) - 20)) bash launch/gpu_benchmark.sh
printf '\ntotal %d s\n' $((SECONDS - start)) >> "$report"
echo "wrote $report"
if ((${#failed[@]})); then
  printf 'failed: %s\n' "${failed[@]}" | tee -a "$report"
  exit 1
fi
