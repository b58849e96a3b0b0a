#!/usr/bin/env bash
# GPU benchmark of the LSTM recurrences: the Pallas kernels checked against fused_vjp (compiled on the GPU), then
# forward+backward timings of scan / fused_vjp / pallas (f32, bf16) / cuDNN / flax_optimized / torch cuDNN at
# (B, T, H) in {(32,35,256), (4,100,1024), (64,100,512), (256,100,1024)}; Markdown to "$OUT/gpu_benchmark.md".
#   bash launch/gpu_benchmark.sh                         # on the GPU machine (jax with CUDA, repo root as cwd)
#   LSTM_JAX_BENCH_SMOKE=1 bash launch/gpu_benchmark.sh  # anywhere: one tiny shape, scan/fused_vjp/pallas(interpret)
# Budget: stops starting new shapes after LSTM_JAX_BENCH_BUDGET_S seconds (default 240) to end in < 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}"  # leave room for torch
OUT="${OUT:-/tmp/lstm_jax_bench}"
mkdir -p "$OUT"
export OUT
python - <<'PY'
import os, platform, time

import jax
import jax.numpy as jnp

from lstm_jax.benchmarks import recurrence as bench

start = time.perf_counter()
smoke = os.environ.get("LSTM_JAX_BENCH_SMOKE") == "1"
budget_s = float(os.environ.get("LSTM_JAX_BENCH_BUDGET_S", "240"))
if smoke:
  shapes, names, rounds, interpret = [(2, 5, 8)], ("scan", "fused_vjp", "pallas"), 2, True
else:
  shapes, rounds, interpret = [(32, 35, 256), (4, 100, 1024), (64, 100, 512), (256, 100, 1024)], 5, False
  names = ("cudnn", "torch_cudnn", "fused_vjp", "scan", "flax_optimized", "pallas")
devices = jax.devices()
out = [f"# LSTM recurrence benchmark{' (SMOKE)' if smoke else ''}\n",
       f"jax {jax.__version__}, backend {jax.default_backend()}, device {devices[0].device_kind}, "
       f"python {platform.python_version()}\n",
       "## Pallas vs fused_vjp (max abs difference)\n",
       "| B | T | H | dot dtype | hs | c_T | dW_h | dxproj | dh0 | dc0 | status |", "|---|---|---|---|---|---|---|---|---|---|---|"]
for (B, T, H) in shapes[:2]:
  for dtype, tol in ((jnp.float32, 1e-3), (jnp.bfloat16, 1e-1)):  # f32 tol allows TF32 in either side's dots
    try:
      d = bench.check_pallas(B, T, H, matmul_dtype=dtype, interpret=True if smoke else None)
      status = "ok" if max(d.values()) < tol * max(1.0, T / 35) else f"MISMATCH (tol {tol})"
      out.append(f"| {B} | {T} | {H} | {jnp.dtype(dtype).name} | " + " | ".join(f"{v:.2e}" for v in d.values())
                 + f" | {status} |")
    except Exception as e:  # noqa: BLE001
      out.append(f"| {B} | {T} | {H} | {jnp.dtype(dtype).name} |" + " |" * 6 + f" error: {type(e).__name__}: "
                 f"{str(e).splitlines()[0][:200] if str(e) else ''} |")
    print(out[-1], flush=True)
rows = []
for (B, T, H) in shapes:
  if time.perf_counter() - start > budget_s:
    rows += [dict(name=n, batch=B, time=T, hidden=H, status="skipped: time budget") for n in names]
    continue
  rows += bench.time_recurrences(B, T, H, names=names, rounds=rounds, pallas_interpret=interpret)
  if not smoke:
    rows += bench.time_recurrences(B, T, H, names=("pallas",), rounds=rounds, matmul_dtype=jnp.bfloat16)
  print(bench.markdown_table([r for r in rows if (r["batch"], r["time"], r["hidden"]) == (B, T, H)]), flush=True)
out += ["\n## Forward + backward of one layer (input projection included; ours: time-major)\n",
        bench.markdown_table(rows), f"\ntotal {time.perf_counter() - start:.0f} s\n"]
path = os.path.join(os.environ["OUT"], "gpu_benchmark.md")
with open(path, "w") as f:
  f.write("\n".join(out))
print(f"wrote {path}")
PY
