"""The kernels lower for CUDA (Triton) and TPU (Mosaic) on a CPU-only machine, via jax.export: each cell's forward
and gradient with the kernels' custom calls in them, and whole accelerator train steps, as the benchmark's
--lower_only command reports."""

import re

import jax
import jax.numpy as jnp
import pytest
from jax import export

from kernel_problems import CELL_NAMES, REPO, kernel, loss, problem
from lstm_jax.benchmarks import lowering
from lstm_jax.models import scratch as model_lib

BACKENDS = {"cuda": "triton", "tpu": "tpu"}  # the kernel backend each export platform lowers


def _custom_calls(fn, platform, *args) -> list[str]:
  """The custom calls of ``fn`` exported for ``platform`` (lowering runs the backend's rules: block shapes,
  layouts, ops)."""
  with lowering._target(platform):
    exported = export.export(jax.jit(fn), platforms=[platform], disabled_checks=[
        export.DisabledSafetyCheck.custom_call(lowering.TRITON_CALL)])(*args)
  return re.findall(r"custom_call @([\w$.]+)", exported.mlir_module())


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("matmul_dtype", [jnp.float32, jnp.bfloat16])
def test_forward_and_grad_lower_without_accelerator(cell, platform, matmul_dtype):
  """One kernel in the forward, two (the residual-saving forward and the reverse kernel) in the gradient; with
  the members axis still one kernel each."""
  for K in (None, 2):
    fwd = kernel(cell, BACKENDS[platform], matmul_dtype, compiled=True)
    grad = jax.grad(lambda *a: loss(fwd, *a), argnums=(0, 1, 2))
    for fn, kernels in ((fwd, 1), (grad, 2)):
      calls = _custom_calls(fn, platform, *problem(cell, 7, 3, 20, K=K))
      assert calls.count(lowering.EXPECTED[platform]) == kernels, calls
      assert "mosaic_gpu" not in " ".join(calls)


@pytest.mark.slow
def test_benchmark_sized_kernel_lowers_for_cuda_and_tpu():
  """H=1024 (8x8 hidden tiles per gate on Triton) at T=100: the largest benchmark shape still lowers."""
  args = problem("lstm", 100, 32, 1024)
  for platform in ("cuda", "tpu"):
    fwd = kernel("lstm", BACKENDS[platform], compiled=True)
    grad = jax.grad(lambda p, x, c: jnp.sum(fwd(p, x, c)[1]), argnums=(0, 1, 2))
    assert lowering.EXPECTED[platform] in _custom_calls(grad, platform, *args)


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_the_pallas_train_step_lowers_with_its_kernel(platform):
  assert lowering.EXPECTED[platform] in lowering.lower_train_step(platform)


def test_a_vmapped_population_step_is_one_launch_per_kernel_with_the_members_in_the_grid():
  """Population training (``jax.vmap`` over members) runs each kernel once for all K members, not K times: on a GPU
  the LSTM's persistent kernels get the members as a second grid axis (P programs x K members, each member with its
  own barrier counter)."""
  module = lowering.lowered_train_step("cuda", members=3)
  launches = re.findall(r"custom_call @__gpu\$xla\.gpu\.triton.*", module)
  assert len(launches) == 2  # the forward kernel and the reverse kernel
  assert all("lstm_persistent" in launch and "grid_y = 3" in launch for launch in launches)


def test_the_lowering_report_names_every_implementation_and_platform():
  lines, ok = lowering.lowering_report(["cuda", "tpu"])
  pallas_lines = [line for line in lines if line.startswith("pallas ")]  # per cell: 2 platforms x 2 dtypes
  assert ok and len(pallas_lines) == 4 * len(model_lib.PALLAS)
  assert sum("ok: __gpu$xla.gpu.triton" in line for line in pallas_lines) == 2 * len(model_lib.PALLAS)
  assert sum("ok: tpu_custom_call" in line for line in pallas_lines) == 2 * len(model_lib.PALLAS)
  for cell in model_lib.PALLAS:
    assert sum(line.startswith(f"pallas {cell} (") for line in pallas_lines) == 4, cell
  cudnn_lines = [line for line in lines if line.startswith("cudnn ")]
  assert len(cudnn_lines) == 1 and " cuda  ok" in cudnn_lines[0]


def test_the_cudnn_train_step_reaches_cudnns_forward_and_backward():
  """Lowered where cuDNN answers; elsewhere (a CPU jaxlib, or the CUDA plugin without a GPU) traced down to the
  primitives that lower to cuDNN's calls, and the placeholder sizes are gone afterwards."""
  from jax._src.lib import gpu_rnn
  name = "compute_rnn_workspace_reserve_space_sizes"
  before = getattr(gpu_rnn, name, None)
  how, found = lowering.cudnn_train_step()
  if how == "lowered":
    assert set(lowering.CUDNN_CALLS) <= {call.split("@")[-1] for call in found}, found
  else:
    assert found == list(lowering.CUDNN_PRIMITIVES)
  assert getattr(gpu_rnn, name, None) is before


@pytest.mark.slow
def test_main_job_with_the_pallas_recurrence_ends_where_fused_vjp_does(tmp_path, real_data_dir):
  """Three epochs of the main job with the kernels (interpret mode on CPU) against the hand-written backward."""
  from lstm_jax import config as config_lib
  from lstm_jax.train import loop as train

  finals = {}
  for recurrence in ("pallas", "fused_vjp"):
    config = config_lib.experiment_config(REPO / "experiments" / "timemachine_lstm.py")
    config.data.data_dir = real_data_dir
    config.model.recurrence = recurrence
    config.train.num_epochs, config.train.generate_every_epochs, config.train.quiet = 3, 0, True
    finals[recurrence] = train.train_and_evaluate(config, str(tmp_path / recurrence))["train_perplexity"]
  assert abs(finals["pallas"] / finals["fused_vjp"] - 1) < 1e-3, finals
