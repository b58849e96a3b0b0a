"""The chips' figures and every assumption of the step-time model, each named once with its source and range.

Figures are the vendors' published numbers (datasheets; for TPUs ``jax/_src/tpu_info.py`` of jax 0.12, which
copies Google Cloud's). Assumptions are numbers no vendor publishes; each carries the range it plausibly lies in,
and ``lstm_jax.estimates.step_time`` uses the central value. The first run on a real chip
(``launch/gpu_check.sh``, or a benchmark on a TPU) prints measured beside estimated, which checks them.
"""

from __future__ import annotations

import dataclasses


US = 1e-6


@dataclasses.dataclass(frozen=True)
class Assumption:
  """A number the model needs that no vendor publishes: its value, plausible range and where it comes from."""
  value: float
  low: float
  high: float
  unit: str
  source: str


ASSUMPTIONS = {
    # GPUs
    "l2_bytes_per_clock_per_sm": Assumption(
        64, 32, 128, "B/clock",
        "L2 -> SM read rate of one SM; NVIDIA publishes none (microbenchmarks of A100/H100 give 32-128)"),
    "l2_aggregate_fraction": Assumption(
        0.4, 0.3, 0.6, "of SMs x per-SM rate",
        "the whole chip's L2 read rate is below the sum over SMs (H100: ~5.5-7 TB/s measured by microbenchmarks "
        "against 16.7 TB/s for 132 SMs x 64 B x 1.98 GHz)"),
    "mma_sync_efficiency": Assumption(
        0.6, 0.4, 0.7, "of the dense tensor-core peak",
        "Ampere-style mma.sync (what Pallas-Triton emits) on Hopper; FlashAttention-3 (Shah et al. 2024) reports "
        "about 2/3 of the wgmma peak"),
    "gemm_efficiency": Assumption(
        0.5, 0.3, 0.8, "of the peak",
        "large GEMMs of the train step outside the recurrence (input projections, head, dW); cuBLAS / XLA"),
    "triton_step_sync_s": Assumption(
        1.0 * US, 0.5 * US, 2.0 * US, "s per step",
        "a Pallas-Triton step's block barriers and its read of h_{t-1} from global memory (dozens of bar.sync, one "
        "L2 round trip of ~600 ns)"),
    "grid_barrier_s": Assumption(
        1.5 * US, 0.8 * US, 3.0 * US, "s per step",
        "the persistent kernel's grid-wide barrier: block barriers, one GPU-scope atomic add and polls through L2 "
        "until all P programs arrived (an L2 atomic round trip is ~0.5-1 us; Diamos et al. 2016 report per-step "
        "synchronisation of a few microseconds)"),
    "stream_launch_s": Assumption(
        2.5 * US, 2.0 * US, 5.0 * US, "s per kernel",
        "a small dependent kernel launched on a stream (host launch rate and the GPU's launch latency)"),
    "graph_launch_s": Assumption(
        2.5 * US, 2.0 * US, 5.0 * US, "s per command buffer",
        "launching one CUDA graph (XLA's command buffer) of a while-loop iteration"),
    "graph_node_s": Assumption(
        1.0 * US, 0.6 * US, 2.0 * US, "s per kernel",
        "one kernel node inside a CUDA graph, dependent on the previous one"),
    # TPUs
    "tpu_pallas_step_cycles": Assumption(
        200, 130, 290, "cycles per layer-step",
        "the Pallas kernels' step work outside the MXU (gates, state, loop), read off v5e's static schedules "
        "(W1 321 / 262, W2 1241 / 1310 cycles forward / backward against 128 and 1024 MXU cycles)"),
    "tpu_xla_mxu_factor": Assumption(
        1.25, 1.15, 1.35, "x the MXU cycles",
        "XLA's while loop (fused_vjp, scan) against the bare MXU cycles, read off v5e's static schedules (W1 "
        "403 / 375, W2 1568 / 1490)"),
    "tpu_xla_step_cycles": Assumption(
        250, 200, 300, "cycles per layer-step", "XLA's while-loop step outside the MXU, same schedules"),
    "tpu_grid_step_s": Assumption(
        0.35 * US, 0.1 * US, 1.0 * US, "s per grid step",
        "a Pallas TPU grid step's fixed cost (Pallas TPU docs: ~0.35 us per grid step)"),
}


def value(name: str) -> float:
  return ASSUMPTIONS[name].value


@dataclasses.dataclass(frozen=True)
class GpuChip:
  """An NVIDIA GPU's published figures (dense rates, no sparsity)."""
  name: str
  sms: int
  clock_hz: float
  hbm_bytes_per_s: float
  l2_bytes: int
  tf32_flops: float      # dense tensor-core TF32 (what Pallas-Triton and XLA use for float32 dots)
  bf16_flops: float
  registers_per_sm: int = 65536
  shared_memory_per_sm: int = 233472
  threads_per_sm: int = 2048
  source: str = ""
  platform: str = "gpu"

  def tensor_flops(self, matmul_dtype: str) -> float:
    return self.bf16_flops if matmul_dtype == "bfloat16" else self.tf32_flops


@dataclasses.dataclass(frozen=True)
class TpuChip:
  """A TPU's published figures per TensorCore (``jax/_src/tpu_info.py``) and its clock (an assumption: Google
  publishes peak FLOP/s, not clocks; ``clock_range`` is its plausible range)."""
  name: str
  bf16_flops: float
  hbm_bytes_per_s: float
  vmem_bytes: int
  mxu_size: int
  num_mxus: int
  clock_hz: float
  clock_range: tuple[float, float]
  source: str = ""
  platform: str = "tpu"

  @property
  def mxu_flops_per_cycle(self) -> float:
    """Peak FLOPs per cycle of the MXUs (float32 operands run at the same row rate on v5e's schedules)."""
    return self.bf16_flops / self.clock_hz


_NVIDIA = "NVIDIA datasheet / architecture whitepaper"
_TPU = "Google Cloud TPU docs, as copied in jax/_src/tpu_info.py (jax 0.12)"
CHIPS = {
    "h100": GpuChip("h100", 132, 1.98e9, 3.35e12, 50 << 20, 494.7e12, 989.4e12, source=f"H100 SXM5 80GB: {_NVIDIA}"),
    "h200": GpuChip("h200", 132, 1.98e9, 4.8e12, 50 << 20, 494.7e12, 989.4e12, source=f"H200 SXM 141GB: {_NVIDIA}"),
    "a100": GpuChip("a100", 108, 1.41e9, 2.04e12, 40 << 20, 156e12, 312e12, registers_per_sm=65536,
                    shared_memory_per_sm=167936, source=f"A100 SXM4 80GB: {_NVIDIA}"),
    "v5e": TpuChip("v5e", 1.97e14, 8.2e11, 128 << 20, 128, 4, 1.5e9, (1.5e9, 1.5e9),
                   source=f"{_TPU}; clock = 197 TFLOP/s / (4 MXUs x 128 x 128 x 2)"),
    "v6e": TpuChip("v6e", 9.2e14, 1.64e12, 128 << 20, 256, 2, 1.75e9, (1.5e9, 2.0e9), source=_TPU),
    "v5p": TpuChip("v5p", 4.59e14 / 2, 2.46e12 / 2, 64 << 20, 128, 4, 1.75e9, (1.6e9, 1.9e9), source=_TPU),
    "v4": TpuChip("v4", 2.75e14 / 2, 1.23e12 / 2, 16 << 20, 128, 4, 1.05e9, (1.05e9, 1.05e9), source=_TPU),
}
# The chip assumed for a platform whose device names no chip above (a GPU or TPU this table lacks, or a model built
# for a platform on a machine without it): the estimate is then the reference chip's, and the choice line says so.
REFERENCE = {"gpu": "h100", "tpu": "v5e"}
_KINDS = (("H100", "h100"), ("H200", "h200"), ("GH200", "h200"), ("A100", "a100"), ("v5 lite", "v5e"),
          ("v5e", "v5e"), ("v6 lite", "v6e"), ("v6e", "v6e"), ("v5p", "v5p"), ("TPU v5", "v5p"), ("TPU v4", "v4"))


def from_device_kind(device_kind: str) -> str | None:
  """The name in ``CHIPS`` of a device kind ("NVIDIA H100 80GB HBM3", "TPU v5 lite"), or None."""
  for fragment, name in _KINDS:
    if fragment in device_kind:
      return name
  return None


def current(platform: str) -> tuple[str, bool]:
  """(chip name, known) for ``platform`` ("gpu" / "tpu"): the default device's chip (``jax.default_device`` when
  set, as ``lstm-jax-compile`` sets it per target), else ``REFERENCE[platform]`` with ``known`` False."""
  from lstm_jax.kernels import layout  # noqa: PLC0415
  device = layout.default_device()
  if device is not None and _platform_of(device) == platform:
    name = from_device_kind(device.device_kind)
    if name is not None:
      return name, True
  return REFERENCE[platform], False


def _platform_of(device) -> str:
  return {"cuda": "gpu", "rocm": "gpu"}.get(device.platform, device.platform)


def table() -> list[str]:
  """Markdown rows of every assumption: name, value, range, unit, source."""
  rows = ["| assumption | value | range | unit | source |", "|---|---|---|---|---|"]
  for name, a in ASSUMPTIONS.items():
    seconds = a.unit.startswith("s ")
    scale, shown = (1e6, a.unit.replace("s ", "us ", 1)) if seconds else (1, a.unit)
    rows.append(f"| {name} | {a.value * scale:g} | {a.low * scale:g}-{a.high * scale:g} | {shown} | {a.source} |")
  return rows
