"""The Pallas kernels compile for real chips at shapes of our own choosing inside the envelope, not only at the
named workloads: odd hidden sizes, long and one-step sequences, batches of 1 and of hundreds, a members axis, at
the envelope's GPU edge. Each case compiles the kernel's forward and hand-written backward (``jax.grad`` of a loss
of every output) for an H100 (Triton -> PTX -> SASS) and a TPU v5e (Mosaic), on this CPU machine, through
``lstm_jax.aot.targets`` (the ``aot`` extra; skipped without it). All cases run in one subprocess, which starts JAX
with only its CPU backend, as the compile command does."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from lstm_jax.aot import targets as targets_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
MISSING = targets_lib.missing_packages("tpu") + targets_lib.missing_packages("cuda")
CASES = [  # cell, T, B, H, matmul dtype, members
    ("lstm", 1000, 3, 200, "float32", 0),     # long sequence, tiny batch, H not a multiple of 128
    ("lstm", 1, 1, 20, "float32", 0),          # one step, one row
    ("lstm", 50, 300, 1000, "bfloat16", 0),   # large batch (several blocks), H just under 1024
    ("lstm", 35, 32, 2048, "bfloat16", 0),    # the GPU envelope's edge
    ("lstm", 35, 32, 256, "float32", 16),      # a population of 16 in the grid
    ("gru_reset_after", 333, 17, 700, "float32", 0),
    ("rnn", 2000, 5, 1500, "float32", 0),
]
SCRIPT = r'''
import json, sys, time
from lstm_jax.aot import targets
targets.use_cpu_backend()
import jax, jax.numpy as jnp
from lstm_jax.cells.lstm import LSTMCarry
from lstm_jax.kernels import gru_pallas, lstm_pallas, rnn_pallas
MODULES = {"lstm": (lstm_pallas, 4), "gru_reset_after": (gru_pallas, 3), "rnn": (rnn_pallas, 1)}
results = []
for name in sys.argv[2:]:
  target = targets.resolve(name)
  device, backend = target.devices[0], "tpu" if target.platform == "tpu" else "triton"
  for cell, T, B, H, dtype, K in json.loads(sys.argv[1]):
    module, G = MODULES[cell]
    lead = (K,) if K else ()
    struct = lambda shape: jax.ShapeDtypeStruct(lead + shape, jnp.float32,
                                                sharding=jax.sharding.SingleDeviceSharding(device))
    params = {"W_h": struct((H, G * H))} | ({"b_hn": struct((H,))} if cell == "gru_reset_after" else {})
    carry = LSTMCarry(struct((B, H)), struct((B, H))) if cell == "lstm" else struct((B, H))
    def loss(params, xproj, carry):
      final, hs = module.recurrence(params, xproj, carry, matmul_dtype=jnp.dtype(dtype), interpret=False,
                                    backend=backend)
      return jnp.sum(hs * hs) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(final))
    start = time.perf_counter()
    try:
      with jax.default_device(device):
        jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(params, struct((T, B, G * H)), carry).compile()
      outcome = "ok"
    except Exception as e:
      outcome = " ".join(str(e).split())[:300]
    results.append([name, cell, T, B, H, dtype, K, outcome, round(time.perf_counter() - start, 1)])
print(json.dumps(results))
'''


@pytest.mark.skipif(bool(MISSING), reason=f"the aot extra is not installed (missing {', '.join(MISSING)})")
def test_kernels_compile_for_h100_and_v5e_at_shapes_inside_the_envelope():
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
  result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(CASES), "h100", "v5e:1x1"], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=1200)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = json.loads(result.stdout.strip().splitlines()[-1])
  assert len(rows) == 2 * len(CASES)
  failed = [row for row in rows if row[7] != "ok"]
  assert not failed, failed
