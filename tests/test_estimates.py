"""The step-time estimates (``lstm_jax.estimates``): the readers of the compilers' dumps on excerpts of real
dumps (H100 thunk sequence, ptxas, v5e final bundles of jax 0.12.0.1 / libtpu 0.0.52), the cost model's
arithmetic against hand-computed figures, and the chip lookup. The compiled end-to-end check (dumps read for
h100 and v5e) is in tests/test_aot_compile.py."""

import math

import pytest

from lstm_jax.estimates import chips
from lstm_jax.estimates import evidence
from lstm_jax.estimates import step_time

# The W1 train step's forward loop and the Pallas kernels (H100 thunk sequence, abridged: the lines as dumped).
THUNKS = """\
000: kCommandBuffer [source       | next=008 (1)]
    001: kCopy         [source       | next=002 (1)] kCopy
    003: kCustomKernel [source       | sink        ] loop_broadcast_fusion_2 grid: [64, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
007: kCustomKernel [prev=006 (1) | next=008 (1) ] lstm_forward_save grid: [1, 2, 1] threads: [256, 1, 1]  shared_memory: 65536 bytes
008: kWhile         [prev=000 (1) | next=000 (1)]
condition:
    009: kCustomKernel [source | sink] loop_compare_fusion grid: [1, 1, 1] threads: [1, 1, 1]  shared_memory: 0 bytes
  body:
    000: kCommandBuffer [source       | next=015 (1)]
        010: kCustomKernel [source       | next=011 (1)] loop_dynamic_slice_fusion grid: [256, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
        011: kCustomKernel [prev=010 (1) | next=012 (1)] gemm_fusion_dot_general_1 grid: [256, 1, 1] threads: [64, 1, 1]  shared_memory: 1024 bytes
        012: kCustomKernel [prev=011 (1) | sink        ] loop_add_multiply_fusion grid: [64, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
    015: kAsyncStart    [prev=000 (1) | sink        ] stream=computation_stream[0], async_id=15
        017: kDynamicSliceFusion [source | sink] params=1, results=1
            016: kCopy [source | sink] kCopy
    018: kCustomKernel  [prev=000 (2) | next=020 (2)] loop_dynamic_update_slice_fusion_4 grid: [64, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
    022: kAsyncDone     [source       | sink        ] async_id=15
    023: kCustomKernel  [prev=021 (2) | sink        ] loop_add_fusion grid: [1, 1, 1] threads: [1, 1, 1]  shared_memory: 0 bytes
000: kCommandBuffer [prev=008 (1) | next=036 (1)]
    024: kCustomKernel [source       | next=032 (8)] loop_pad_fusion grid: [576, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
020: kCustomKernel [prev=019 (1) | next=021 (1) ] lstm_backward grid: [1, 2, 1] threads: [256, 1, 1]  shared_memory: 65536 bytes
"""

# A Mosaic kernel's final bundles (v5e, abridged): a loop over chunks (">") holding the step loop (">>").
BUNDLES = """\
     0   :  { %s3778_s0 = inlined_call_operand.vmem [shape: f32[1,36,32,1024], index: 0, kind: input] }
   0x6 LB: > { %s33_s9 = sadd.s32 1, %s2439_s28 }
   0x7   : > { %p34_p0 = scmp.ge.s32.totalorder %s33_s9, 2 }
  0x2e   :  {} /* End region 138 */
  0x2f LB: >> { %v744_v16 = vld [vmem:[%s3779_s1 + $0x3c0] sm:$0xff] }
  0x30   : >> { %778 = vmatpush.msra.mxu0 %v744_v16 }
  0x31   : >> { %807 = vmatpush.msra.mxu1 %v776_v17 }
 0x16f   : >> { %1200 = vmatmul.f32.gmr.mxu0 %v1_v1 }
 0x170   : > { %s1300 = sadd.s32 1, %s1299 }
 0x171   : >> { %1301 = vst [vmem:[#allocation4] sm:$0xff] %v2_v2 }
"""


def test_the_thunk_reader_finds_kernels_grids_and_the_loop_iteration():
  launches = evidence.parse_thunks(THUNKS)
  forward = next(l for l in launches if l.name == "lstm_forward_save")
  assert (forward.programs, forward.threads, forward.shared_memory) == (2, 256, 65536)
  loops = evidence.while_loops(launches)
  # One command buffer of 3 kernels; on the stream: an async copy and two kernels; one condition kernel.
  assert loops == [step_time.GpuLoop(stream_kernels=3, command_buffers=1, graph_kernels=3, condition_kernels=1)]


def test_the_bundle_reader_takes_the_largest_run_of_the_deepest_loop():
  assert evidence.step_cycles(BUNDLES) == 0x16f - 0x2f + 1
  assert evidence.step_cycles("no bundles here") == 0


def test_dump_environment_names_both_compilers(tmp_path):
  env = evidence.dump_environment(tmp_path)
  assert env["XLA_FLAGS"].startswith(f"--xla_dump_to={tmp_path / 'xla'} ")  # with the kernels' PTX
  assert f"--xla_jf_dump_to={tmp_path / 'tpu'}" in env["LIBTPU_INIT_ARGS"]
  assert env["LLVM_DISABLE_SYMBOLIZATION"] == "1"


def test_device_kinds_name_their_chips():
  assert chips.from_device_kind("NVIDIA H100 80GB HBM3") == "h100"
  assert chips.from_device_kind("NVIDIA A100-SXM4-80GB") == "a100"
  assert chips.from_device_kind("TPU v5 lite") == "v5e"
  assert chips.from_device_kind("TPU v6 lite") == "v6e"
  assert chips.from_device_kind("cpu") is None
  assert chips.current("gpu") == ("h100", False)  # this machine has no GPU: the reference chip, said so


def test_every_assumption_has_a_range_that_holds_its_value_and_a_source():
  for name, a in chips.ASSUMPTIONS.items():
    assert a.low <= a.value <= a.high and a.source, name
  assert len(chips.table()) == 2 + len(chips.ASSUMPTIONS)


def test_the_batch_blocked_gpu_kernel_reads_all_of_w_h_through_one_sms_l2_port():
  """W2 float32 on an H100 (the GRU's and tanh RNN's kernels, and the LSTM's outside the persistent envelope):
  4 programs, each reads 4 MiB of W_h plus its state per step at 64 B/clock."""
  shape = step_time.Shape("lstm", 2, 512, 64, 100)
  h100 = chips.CHIPS["h100"]
  kernel = step_time._triton_kernel(shape)
  assert kernel.programs == 4 and kernel.bytes_per_step == 4 * 512 * 512 * 4 + 16 * 512 * 6 * 4
  seconds, bound = step_time._gpu_kernel_step(kernel, h100)
  expected = kernel.bytes_per_step / (64 * 1.98e9) + chips.value("triton_step_sync_s")
  assert bound == "L2 per SM" and seconds == pytest.approx(expected)
  # bfloat16 W_h halves the bytes and so nearly halves the step.
  half = step_time._triton_kernel(dataclass_replace(shape, matmul_dtype="bfloat16"))
  assert step_time._gpu_kernel_step(half, h100)[0] < 0.6 * seconds
  assert step_time.predict(step_time.Shape("rnn", 2, 512, 64, 100), "pallas", h100).forward == \
      step_time._triton_kernel(step_time.Shape("rnn", 2, 512, 64, 100))


def test_the_persistent_kernel_reads_h_and_its_w_h_slice_and_meets_at_the_barrier():
  """W2 float32 on an H100: 32 programs of 16 units; per step each reads h_{t-1} (128 KiB) and its inputs (its W_h
  slice, 128 KiB, stays on chip), then waits at the grid barrier."""
  shape = step_time.Shape("lstm", 2, 512, 64, 100)
  h100 = chips.CHIPS["h100"]
  forward, backward = step_time.predict(shape, "pallas", h100).forward, step_time.predict(shape, "pallas",
                                                                                        h100).backward
  assert forward.grid_barrier and forward.programs == 32
  assert forward.bytes_per_step == 64 * 512 * 4 + 64 * 16 * 4 * 4
  assert backward.bytes_per_step == forward.bytes_per_step + 64 * 512 * 4  # the partials of every program
  seconds, bound = step_time._gpu_kernel_step(forward, h100)
  assert forward.flops_per_step == 2 * 64 * 512 * 4 * 16  # [64, 512] x [512, 64] on one SM
  per_sm = 494.7e12 / 132 * chips.value("mma_sync_efficiency")
  assert bound == "tensor cores"  # more than the 147 KiB it reads at 64 B/clock
  assert seconds == pytest.approx(forward.flops_per_step / per_sm + chips.value("grid_barrier_s"))
  # The targets, by this model: >= 5x the batch-blocked kernel at W2 float32, >= fused_vjp at W1, W2, W5.
  old = step_time.estimate(shape, step_time.Structure("pallas", *(step_time._triton_kernel(shape),) * 2), h100)
  assert step_time.estimates(shape, "h100")["pallas"].tokens_per_second >= 5 * old.tokens_per_second
  for hidden, batch, steps, layers in ((256, 32, 35, 1), (512, 64, 100, 2), (512, 16, 1000, 1)):
    found = step_time.estimates(step_time.Shape("lstm", layers, hidden, batch, steps), "h100")
    assert found["pallas"].step_seconds <= found["fused_vjp"].step_seconds


def dataclass_replace(shape, **kwargs):
  import dataclasses  # noqa: PLC0415
  return dataclasses.replace(shape, **kwargs)


def test_an_xla_loop_iteration_costs_its_launches():
  shape = step_time.Shape("lstm", 1, 256, 32, 35)
  loop = step_time.GpuLoop(stream_kernels=6, command_buffers=1, graph_kernels=5, condition_kernels=1)
  seconds, bound = step_time._gpu_loop_step(loop, shape, chips.CHIPS["h100"])
  launches = 7 * chips.value("stream_launch_s") + chips.value("graph_launch_s") + 5 * chips.value("graph_node_s")
  assert bound == "latency" and launches < seconds < launches * 1.1


def test_tpu_step_takes_the_larger_of_mxu_cycles_and_hbm_bytes():
  v5e = chips.CHIPS["v5e"]
  shape = step_time.Shape("lstm", 2, 512, 64, 100)
  step = step_time.predict(shape, "pallas", v5e).forward
  # 64 rows x 512 x 2048 on four 128x128 MXUs: 1024 cycles, plus the step's other work.
  assert step.cycles == pytest.approx(1024 + chips.value("tpu_pallas_step_cycles"), rel=0.01)
  seconds, bound = step_time._tpu_step_seconds(step, shape, v5e)
  assert bound == "HBM" and seconds >= step.hbm_bytes / v5e.hbm_bytes_per_s
  assert step_time._tpu_step_seconds(dataclass_replace(step, hbm_bytes=0), shape, v5e)[1] == "MXU"


def test_outside_the_envelope_the_kernel_does_not_fit():
  shape = step_time.Shape("lstm", 1, 8192, 8, 10)
  estimate = step_time.estimates(shape, "v4")["pallas"]  # v4: 16 MiB of VMEM
  assert estimate.bound == "does not fit" and math.isinf(estimate.step_seconds)


def test_a_step_is_layers_times_steps_of_both_directions_plus_the_rest():
  shape = step_time.Shape("lstm", 2, 512, 64, 100)
  e = step_time.estimates(shape, "h100")["fused_vjp"]
  recurrence = 2 * 100 * (e.forward_us + e.backward_us) * 1e-6
  assert e.step_seconds == pytest.approx(recurrence + step_time.outside_seconds(shape, chips.CHIPS["h100"]))
  assert e.tokens_per_second == pytest.approx(64 * 100 / e.step_seconds)
  assert "M tokens/s" in e.describe() and "latency-bound" in e.describe()


def test_choose_takes_the_fastest_and_fused_vjp_on_a_tie():
  make = lambda r, s: step_time.Estimate(r, "h100", s, 1 / s, "latency", 1, 1)
  assert step_time.choose({"pallas": make("pallas", 1.0), "fused_vjp": make("fused_vjp", 2.0)}) == "pallas"
  assert step_time.choose({"pallas": make("pallas", 1.0), "fused_vjp": make("fused_vjp", 1.0)}) == "fused_vjp"
