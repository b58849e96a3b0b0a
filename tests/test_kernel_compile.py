"""The Pallas kernels compile for real chips at shapes of our own choosing inside the envelope, not only at the
named workloads: odd hidden sizes, long and one-step sequences, batches of 1 and of hundreds, a members axis, at
the envelope's GPU edge. Each case compiles the kernel's forward and hand-written backward (``jax.grad`` of a loss
of every output) for an H100 (Triton -> PTX -> SASS) and a TPU v5e (Mosaic), on this CPU machine, through
``lstm_jax.aot.targets`` (the ``aot`` extra; skipped without it). All cases run in one subprocess, which starts JAX
with only its CPU backend, as the compile command does (``kernel_problems.run_script``), on the shapes of
``kernel_problems.problem_shapes`` and the loss of ``kernel_problems.loss``."""

import json

import pytest

from kernel_problems import run_script
from lstm_jax.aot import targets as targets_lib

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
import functools
import jax, jax.numpy as jnp
from kernel_problems import kernel, loss, problem_shapes
is_shape = lambda x: isinstance(x, tuple) and all(isinstance(d, int) for d in x)
results = []
for name in sys.argv[2:]:
  target = targets.resolve(name)
  device, backend = target.devices[0], "tpu" if target.platform == "tpu" else "triton"
  struct = lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=jax.sharding.SingleDeviceSharding(device))
  for cell, T, B, H, dtype, K in json.loads(sys.argv[1]):
    args = jax.tree.map(struct, problem_shapes(cell, T, B, H, K or None), is_leaf=is_shape)
    grad = jax.grad(functools.partial(loss, kernel(cell, backend, jnp.dtype(dtype), compiled=True)), argnums=(0, 1, 2))
    start = time.perf_counter()
    try:
      with jax.default_device(device):
        jax.jit(grad).lower(*args).compile()
      outcome = "ok"
    except Exception as e:
      outcome = " ".join(str(e).split())[:300]
    results.append([name, cell, T, B, H, dtype, K, outcome, round(time.perf_counter() - start, 1)])
print(json.dumps(results))
'''


@pytest.mark.skipif(bool(MISSING), reason=f"the aot extra is not installed (missing {', '.join(MISSING)})")
def test_kernels_compile_for_h100_and_v5e_at_shapes_inside_the_envelope():
  rows = run_script(SCRIPT, json.dumps(CASES), "h100", "v5e:1x1", timeout=1200, TF_CPP_MIN_LOG_LEVEL="3")
  assert len(rows) == 2 * len(CASES)
  failed = [row for row in rows if row[7] != "ok"]
  assert not failed, failed


PERSISTENT_CASES = [  # target, T, B, H, matmul dtype
    ("h100", 8, 32, 256, "float32"),    # W_h's slice kept on chip (64 KiB)
    ("h100", 8, 64, 1024, "float32"),   # the slice (256 KiB) read from L2 every step; 64 programs
    ("a100", 8, 32, 256, "float32"),
]
PERSISTENT_SCRIPT = r'''
import json, os, pathlib, sys, tempfile
dump = tempfile.mkdtemp()
from lstm_jax.estimates import evidence
os.environ.update(evidence.dump_environment(dump))
dump = os.path.join(dump, "xla")
from lstm_jax.aot import targets
targets.use_cpu_backend()
import dataclasses, shutil
import functools
import jax, jax.numpy as jnp
from kernel_problems import loss, problem_shapes
from lstm_jax.kernels import lstm_persistent
is_shape = lambda x: isinstance(x, tuple) and all(isinstance(d, int) for d in x)
rows = []
for name, T, B, H, dtype in json.loads(sys.argv[1]):
  device = targets.resolve(name).devices[0]
  struct = lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=jax.sharding.SingleDeviceSharding(device))
  args = jax.tree.map(struct, problem_shapes("lstm", T, B, H), is_leaf=is_shape)
  persistent = functools.partial(lstm_persistent.recurrence, matmul_dtype=jnp.dtype(dtype), interpret=False)
  with jax.default_device(device):
    plan = lstm_persistent.plan(T, B, H, dtype)
    jax.jit(jax.grad(functools.partial(loss, persistent), argnums=(0, 1, 2))).lower(*args).compile()
  reports = evidence.kernel_reports(pathlib.Path(dump), "sm_80" if name == "a100" else "sm_90a")
  rows.append({"case": [name, T, B, H, dtype], "P": plan.P, "resident": plan.resident,
               "kernels": {k: dataclasses.asdict(v) for k, v in reports.items() if "persistent" in k}})
  shutil.rmtree(dump)
  os.makedirs(dump)
print(json.dumps(rows))
'''


@pytest.mark.skipif(bool(MISSING), reason=f"the aot extra is not installed (missing {', '.join(MISSING)})")
def test_the_persistent_lstm_compiles_for_h100_and_a100_with_its_grid_barrier():
  """The grid the design says (P programs), the barrier's GPU-scope acquire-release atomics and the exchanged
  state's L1-bypassing loads in the PTX, tensor-core dots, and spills that do not grow with H (ptxas)."""
  rows = run_script(PERSISTENT_SCRIPT, json.dumps(PERSISTENT_CASES), timeout=1200, TF_CPP_MIN_LOG_LEVEL="3")
  spills = {}
  for row in rows:
    kernels = row["kernels"]
    assert set(kernels) == {"lstm_persistent_forward", "lstm_persistent_backward"}, row
    for name, k in kernels.items():
      assert k["programs"] == row["P"], row
      assert k["acq_rel_atomics"] >= 2 and k["cg_loads"] > 0 and k["tensor_core_ops"] > 0, row
      spills[tuple(row["case"]), name] = k["spill_bytes"]
  for name in ("lstm_persistent_forward", "lstm_persistent_backward"):
    small, large = (spills[tuple(c), name] for c in (list(PERSISTENT_CASES[0]), list(PERSISTENT_CASES[1])))
    assert large <= max(small, 0) + 256, (name, small, large)
