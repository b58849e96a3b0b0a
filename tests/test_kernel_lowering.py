"""Whole accelerator train steps lower on a CPU-only machine (jax.export for cuda and tpu) with the kernels'
custom calls in them, as the benchmark's --lower_only command reports."""

import pathlib
import re

import pytest

from lstm_jax.benchmarks import lowering
from lstm_jax.models import scratch as model_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


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
