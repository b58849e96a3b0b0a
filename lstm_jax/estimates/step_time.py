"""Estimated train-step time of each recurrence (``pallas``, ``fused_vjp``, ``scan``) on a chip, from the program's
structure and the chip's figures (``lstm_jax.estimates.chips``). These are estimates, not measurements.

The structure of a recurrence (``Structure``) is what the compilers decide and what sets its speed: on a GPU the
Pallas kernel's programs, threads, registers and shared memory per program and the bytes each program reads per
step; XLA's while loop's kernels per iteration (in CUDA graphs or launched one by one). On a TPU the static cycles
of one layer-step and the bytes a step moves through HBM. ``predict`` derives it from the shapes (the kernels'
own layout code and the loop structure read off the compilers' dumps, see the constants below);
``lstm_jax.estimates.evidence`` reads it from a compiled program instead.

How the terms combine, per layer-step (one time step of one layer), forward and backward alike:

- GPU, Pallas: each program streams its ``W_h`` tile set from L2 every step (the kernels keep none on chip) and
  runs its dots on one SM: ``max(L2 bytes per SM / per-SM L2 rate, all programs' bytes / the chip's L2 rate,
  FLOPs per SM / mma.sync rate) + step sync``, times the waves of programs the SMs can hold.
- GPU, XLA: an iteration launches its kernels one after another: ``stream kernels x stream launch + command
  buffers x graph launch + kernels in them x graph node + the step's GEMM``. Small kernels are latency bound.
- TPU: the step's static cycles at the chip's clock, against the bytes it moves through HBM at the chip's
  bandwidth; the larger wins (the DMAs of the next chunk overlap the MXU work of this one), plus the grid-step
  cost per chunk (Pallas).

A train step is the recurrence's forward and backward over every layer and step, plus the work outside it (input
projections, head, their gradients, the optimizer) at ``gemm_efficiency`` of the chip's peak.
"""

from __future__ import annotations

import dataclasses
import math

from lstm_jax.estimates import chips as chips_lib

CANDIDATES = ("pallas", "fused_vjp", "scan")
F32 = 4
NUM_GATES = {"lstm": 4, "gru_reset_after": 3, "rnn": 1, "gru": 3}

# XLA's while loops on an H100, per iteration (the thunk sequence of the W1 train step, jax 0.12.0.1): kernels
# launched on the stream, command buffers, kernels inside them, loop condition kernels.
XLA_GPU_LOOPS = {
    "fused_vjp": {"forward": (6, 1, 5, 1), "backward": (0, 1, 6, 1)},
    "scan": {"forward": (7, 1, 10, 1), "backward": (3, 1, 5, 1)},
}
TRITON_THREADS = 256        # 8 warps per program (the kernels' num_warps)
TRITON_REGISTERS = 255      # ptxas: the kernels use (nearly) every register a thread may have
TRITON_SHARED_MEMORY = 65536


@dataclasses.dataclass(frozen=True)
class Shape:
  """The workload: ``num_layers`` layers of ``cell`` with ``hidden`` units, ``[batch, steps]`` tokens of a
  ``vocab``-symbol vocabulary, matmuls in ``matmul_dtype``."""
  cell: str
  num_layers: int
  hidden: int
  batch: int
  steps: int
  vocab: int = 28
  matmul_dtype: str = "float32"

  @property
  def gates(self) -> int:
    return NUM_GATES.get(self.cell, 4)

  @property
  def itemsize(self) -> int:
    return 2 if self.matmul_dtype == "bfloat16" else 4

  @property
  def tokens(self) -> int:
    return self.batch * self.steps


@dataclasses.dataclass(frozen=True)
class GpuKernel:
  """A Pallas-Triton kernel as compiled: grid programs, threads, registers, shared memory per program, and the
  bytes each program reads and FLOPs it does per step; ``grid_barrier``: its programs meet at a grid-wide barrier
  every step (the persistent kernel), else each program walks its own batch rows."""
  programs: int
  threads: int
  registers: int
  shared_memory: int
  bytes_per_step: float
  flops_per_step: float
  spills: int = 0
  grid_barrier: bool = False


@dataclasses.dataclass(frozen=True)
class GpuLoop:
  """One XLA while-loop iteration: stream kernels, command buffers, kernels in them, condition kernels."""
  stream_kernels: int
  command_buffers: int
  graph_kernels: int
  condition_kernels: int


@dataclasses.dataclass(frozen=True)
class TpuStep:
  """One layer-step on a TPU: static cycles, bytes through HBM, and grid steps per sequence (Pallas chunks)."""
  cycles: float
  hbm_bytes: float
  grid_steps_per_sequence: int = 0


@dataclasses.dataclass(frozen=True)
class Structure:
  """What sets a recurrence's speed: per direction ("forward", "backward") a ``GpuKernel``, ``GpuLoop`` or
  ``TpuStep``; ``source`` says whether it was predicted from the shapes ("model") or read from the compiler
  ("compiler")."""
  recurrence: str
  forward: GpuKernel | GpuLoop | TpuStep
  backward: GpuKernel | GpuLoop | TpuStep
  source: str = "model"


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A candidate's estimated train step on a chip: seconds, tokens per second, the bound that dominates its
  recurrence, and the microseconds of one layer-step forward and backward."""
  recurrence: str
  chip: str
  step_seconds: float
  tokens_per_second: float
  bound: str
  forward_us: float
  backward_us: float
  source: str = "model"

  def describe(self) -> str:
    return (f"{self.recurrence} ~{self.tokens_per_second / 1e6:.2f} M tokens/s ({format_seconds(self.step_seconds)} "
            f"a step, {self.bound}-bound)")


def format_seconds(seconds: float) -> str:
  """"1.27 ms", "35 us"."""
  if not math.isfinite(seconds):
    return "-"
  return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} us"


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


# ---------------------------------------------------------------------------------------------------------------
# Structure predicted from the shapes.

def predict(shape: Shape, recurrence: str, chip) -> Structure:
  """The structure ``recurrence`` compiles to for ``shape`` on ``chip`` (a ``GpuChip`` or ``TpuChip``)."""
  if chip.platform == "gpu":
    if recurrence == "pallas":
      persistent = _persistent_kernels(shape, chip) if shape.cell == "lstm" else None
      if persistent is not None:
        return Structure(recurrence, *persistent)
      kernel = _triton_kernel(shape)
      return Structure(recurrence, kernel, kernel)
    loops = XLA_GPU_LOOPS[recurrence]
    return Structure(recurrence, GpuLoop(*loops["forward"]), GpuLoop(*loops["backward"]))
  return Structure(recurrence, _tpu_step(shape, recurrence, chip, "forward"),
                   _tpu_step(shape, recurrence, chip, "backward"))


def _triton_kernel(shape: Shape) -> GpuKernel:
  """The Triton layout (``lstm_jax.kernels.layout``): one program per 16 batch rows, ``W_h`` padded to a power of
  two and read whole by every program every step."""
  from lstm_jax.kernels import layout as layout_lib  # noqa: PLC0415
  Hp = layout_lib.next_pow2(max(shape.hidden, 16))
  bB = layout_lib.TRITON_BATCH_BLOCK
  programs = -(-shape.batch // bB)
  weights = shape.gates * Hp * Hp * shape.itemsize
  state = bB * Hp * (shape.gates + 2) * F32  # h_{t-1}, this step's input projection, outputs
  return GpuKernel(programs, TRITON_THREADS, TRITON_REGISTERS, TRITON_SHARED_MEMORY, weights + state,
                   2.0 * bB * Hp * shape.gates * Hp)


def _persistent_kernels(shape: Shape, chip) -> tuple[GpuKernel, GpuKernel] | None:
  """The persistent LSTM kernels (``lstm_jax.kernels.lstm_persistent``): P programs of U units each; per step a
  program reads all of ``h_{t-1}`` (forward) or all programs' partial ``dh`` for its units and writes its own
  partial (reverse), plus its ``W_h`` slice when that does not stay on chip."""
  from lstm_jax.kernels import lstm_persistent  # noqa: PLC0415
  plan = lstm_persistent.plan(shape.steps, shape.batch, shape.hidden, shape.matmul_dtype, chip.sms)
  if plan is None:
    return None
  state = plan.Bp * plan.Hp * F32
  weights = 0 if plan.resident else plan.slice_bytes(shape.itemsize)
  inputs = plan.Bp * plan.U * NUM_GATES["lstm"] * F32  # this step's xproj or saved gates, own columns
  flops = 2.0 * plan.Bp * plan.Hp * NUM_GATES["lstm"] * plan.U
  make = lambda nbytes: GpuKernel(plan.P, lstm_persistent.NUM_WARPS * 32, TRITON_REGISTERS, 32768, nbytes, flops,
                                  grid_barrier=True)
  return make(state + weights + inputs), make(2 * state + weights + inputs)


def _mxu_cycles(rows: int, k: int, n: int, chip: chips_lib.TpuChip) -> float:
  """Cycles of a ``[rows, k] @ [k, n]`` on the MXUs, ``k`` and ``n`` padded to the MXU, ``rows`` to 8."""
  d = chip.mxu_size
  return 2.0 * _round_up(max(rows, 1), 8) * _round_up(k, d) * _round_up(n, d) / chip.mxu_flops_per_cycle


def _tpu_step(shape: Shape, recurrence: str, chip: chips_lib.TpuChip, direction: str) -> TpuStep:
  H, G, B = shape.hidden, shape.gates, shape.batch
  if recurrence == "pallas":
    from lstm_jax.kernels import envelope, layout as layout_lib  # noqa: PLC0415
    kernel = envelope.kernel(shape.cell if shape.cell in ("lstm", "rnn", "gru_reset_after") else "lstm")
    lay = layout_lib.tpu_layout(kernel, shape.steps, B, H, shape.matmul_dtype, chip.vmem_bytes)
    if lay is None:
      return TpuStep(math.inf, 0.0)
    blocks = lay.Bp // lay.bB
    cycles = blocks * (_mxu_cycles(lay.bB, lay.Hp, G * lay.Hp, chip) + chips_lib.value("tpu_pallas_step_cycles"))
    cycles *= lay.Tp / shape.steps
    hbm = lay.Bp * lay.Hp * kernel.seq_width * F32
    return TpuStep(cycles, hbm, blocks * lay.num_chunks)
  mxu = _mxu_cycles(B, H, G * H, chip)
  if recurrence == "scan" and direction == "backward":
    mxu += _mxu_cycles(H, B, G * H, chip)  # autodiff accumulates dW_h with one matmul per step
  cycles = chips_lib.value("tpu_xla_mxu_factor") * mxu + chips_lib.value("tpu_xla_step_cycles")
  sequence = shape.steps * B * (G + 2) * H * F32  # saved gates, cell states and hidden states of the layer
  from lstm_jax.kernels import layout as layout_lib  # noqa: PLC0415
  hbm = 0.0 if sequence <= layout_lib.vmem_budget(chip.vmem_bytes) else B * (G + 2) * H * F32
  return TpuStep(cycles, hbm)


# ---------------------------------------------------------------------------------------------------------------
# Seconds from a structure.

def _gpu_kernel_step(kernel: GpuKernel, chip: chips_lib.GpuChip) -> tuple[float, str]:
  per_sm = min(chip.registers_per_sm // max(kernel.threads * kernel.registers, 1),
               chip.shared_memory_per_sm // max(kernel.shared_memory, 1), chip.threads_per_sm // kernel.threads)
  per_sm = max(per_sm, 1)
  waves = -(-kernel.programs // (chip.sms * per_sm))
  resident = min(per_sm, -(-kernel.programs // chip.sms))
  active_sms = min(kernel.programs, chip.sms)
  l2_sm = chips_lib.value("l2_bytes_per_clock_per_sm") * chip.clock_hz
  terms = {
      "L2 per SM": resident * kernel.bytes_per_step / l2_sm,
      "L2": min(kernel.programs, active_sms * per_sm) * kernel.bytes_per_step
            / (chip.sms * l2_sm * chips_lib.value("l2_aggregate_fraction")),
      "tensor cores": resident * kernel.flops_per_step
                      / (chip.tf32_flops / chip.sms * chips_lib.value("mma_sync_efficiency")),
  }
  if kernel.bytes_per_step > chip.l2_bytes:
    terms["HBM"] = kernel.bytes_per_step / chip.hbm_bytes_per_s
  bound = max(terms, key=terms.get)
  work = terms[bound]
  sync = chips_lib.value("grid_barrier_s" if kernel.grid_barrier else "triton_step_sync_s")
  if kernel.grid_barrier and sync > work:
    bound = "grid barrier"
  return waves * (work + sync), bound


def _gpu_loop_step(loop: GpuLoop, shape: Shape, chip: chips_lib.GpuChip) -> tuple[float, str]:
  v = chips_lib.value
  latency = ((loop.stream_kernels + loop.condition_kernels) * v("stream_launch_s")
             + loop.command_buffers * v("graph_launch_s") + loop.graph_kernels * v("graph_node_s"))
  weights = shape.gates * shape.hidden * shape.hidden * shape.itemsize
  gemm = max(weights / (chip.sms * v("l2_bytes_per_clock_per_sm") * chip.clock_hz * v("l2_aggregate_fraction")),
             2.0 * shape.batch * shape.hidden * shape.gates * shape.hidden
             / (chip.tensor_flops(shape.matmul_dtype) * v("gemm_efficiency")))
  return latency + gemm, "latency" if latency >= gemm else "GEMM"


def _tpu_step_seconds(step: TpuStep, shape: Shape, chip: chips_lib.TpuChip) -> tuple[float, str]:
  compute = step.cycles / chip.clock_hz
  hbm = step.hbm_bytes / chip.hbm_bytes_per_s
  grid = step.grid_steps_per_sequence * chips_lib.value("tpu_grid_step_s") / max(shape.steps, 1)
  return max(compute, hbm) + grid, ("MXU" if compute >= hbm else "HBM")


def _direction_seconds(part, shape: Shape, chip) -> tuple[float, str]:
  if isinstance(part, GpuKernel):
    return _gpu_kernel_step(part, chip)
  if isinstance(part, GpuLoop):
    return _gpu_loop_step(part, shape, chip)
  return _tpu_step_seconds(part, shape, chip)


def outside_seconds(shape: Shape, chip) -> float:
  """The train step's work outside the recurrence: input projections of layers above the first, the head, their
  gradients and ``dW_h`` (one GEMM after the loop), at ``gemm_efficiency`` of the chip's peak."""
  H, G, tokens = shape.hidden, shape.gates, shape.tokens
  flops = 3 * 2.0 * tokens * (H * shape.vocab + (shape.num_layers - 1) * H * G * H)
  flops += shape.num_layers * 2.0 * tokens * H * G * H  # dW_h
  peak = chip.tensor_flops(shape.matmul_dtype) if chip.platform == "gpu" else chip.bf16_flops
  return flops / (peak * chips_lib.value("gemm_efficiency"))


def estimate(shape: Shape, structure: Structure, chip) -> Estimate:
  """The train step's estimate for ``structure`` on ``chip``."""
  forward, bound = _direction_seconds(structure.forward, shape, chip)
  backward, _ = _direction_seconds(structure.backward, shape, chip)
  if not math.isfinite(forward + backward):
    return Estimate(structure.recurrence, chip.name, math.inf, 0.0, "does not fit", math.inf, math.inf,
                    structure.source)
  seconds = shape.num_layers * shape.steps * (forward + backward) + outside_seconds(shape, chip)
  return Estimate(structure.recurrence, chip.name, seconds, shape.tokens / seconds, bound, forward * 1e6,
                  backward * 1e6, structure.source)


def estimates(shape: Shape, chip_name: str, candidates=CANDIDATES) -> dict[str, Estimate]:
  """The model's estimate of every candidate for ``shape`` on the chip named ``chip_name``."""
  chip = chips_lib.CHIPS[chip_name]
  return {r: estimate(shape, predict(shape, r, chip), chip) for r in candidates}


def choose(found: dict[str, Estimate]) -> str:
  """The candidate with the lowest estimated step time (``fused_vjp`` on a tie)."""
  order = {"fused_vjp": 0, "pallas": 1, "scan": 2}
  return min(found, key=lambda r: (found[r].step_seconds, order.get(r, 3)))


def choice_line(shape: Shape, chip_name: str, known: bool, found: dict[str, Estimate], chosen: str) -> str:
  """"recurrence=auto on h100 takes fused_vjp: estimates fused_vjp ~1.02 M tokens/s (...), pallas ..."."""
  chip = chip_name if known else f"{chip_name} (assumed: the device names no chip the model knows)"
  others = "; ".join(found[r].describe() for r in sorted(found, key=lambda r: found[r].step_seconds))
  return (f"recurrence=auto on {chip} takes {chosen} for batch {shape.batch} x {shape.steps} steps, hidden "
          f"{shape.hidden} ({shape.matmul_dtype}); estimates, not measurements: {others}.")


def markdown_table(workloads: dict[str, Shape], chip_names: list[str], date: str) -> str:
  """One row per (workload, matmul dtype, chip): each candidate's estimated tokens/s and bound, and auto's pick."""
  lines = [f"Estimates of {date} (the model's structure; not measurements): train-step tokens/s and the bound "
           f"that dominates the recurrence.", "",
           "| workload | matmul dtype | chip | " + " | ".join(CANDIDATES) + " | auto takes |",
           "|---|---|---|" + "---:|" * len(CANDIDATES) + "---|"]
  for name, shape in workloads.items():
    for dtype in ("float32", "bfloat16"):
      typed = dataclasses.replace(shape, matmul_dtype=dtype)
      for chip in chip_names:
        found = estimates(typed, chip)
        cells = [f"{found[r].tokens_per_second / 1e6:.2f} M ({found[r].bound})" for r in CANDIDATES]
        lines.append(f"| {name} | {dtype} | {chip} | " + " | ".join(cells) + f" | {choose(found)} |")
  return "\n".join(lines)
