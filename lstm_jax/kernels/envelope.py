"""The envelope of the Pallas kernels: the shapes each kernel compiles for on each platform, from the budget
formulas of ``lstm_jax.kernels.layout`` (checked against the real compilers by ``benchmark --compile_only`` and
``lstm-jax-compile``).

- TPU: ``W_h`` stays in VMEM for the whole sequence, so the hidden size is bounded by the VMEM of one TensorCore:
  ``G Hp^2 itemsize`` bytes of ``W_h`` plus the smallest blocks (batch block 8, one step per chunk) must fit in
  3/4 of it (``layout_lib.vmem_budget``). Batch and sequence length are not bounded: the batch block shrinks and the
  time chunks stream through VMEM. ``max_hidden`` gives the edge per cell, dtype and chip.
- GPU (Triton): the code of a step does not grow with the shape (rolled tile loops), so compilation does not bound
  the hidden size. ``W_h`` is re-read every step, from L2 while it fits there (H100: 50 MB, the LSTM's float32
  ``W_h`` up to about H = 1800); the envelope stops at ``GPU_MAX_HIDDEN`` = 2048, the largest size the compile
  matrix checks, beyond which every step streams ``W_h`` from HBM and XLA's recurrence (one cuBLAS matmul a step)
  is the safer choice. The grid's batch-block and members axes are bounded by CUDA's grid size (65535).

- Devices: a batch split over several devices (data parallel) runs one kernel per device on its rows
  (``lstm_jax.kernels.sharded``: a ``shard_map`` over the step's mesh), and a population whose members divide over
  the devices steps each device's members there (``lstm_jax.sweeps.population``). Members that do not divide are
  replicated on every device, and XLA does not partition a kernel call (Mosaic refuses to; on GPUs XLA would gather
  the operands), so such a population uses XLA's recurrence (``member_devices`` below).

``recurrence=auto`` considers a kernel only inside the envelope (and takes it where ``lstm_jax.estimates`` puts it
first), saying so in one line; an explicit ``recurrence=pallas`` outside it is refused with the limit.
"""

from __future__ import annotations

import jax.numpy as jnp

from lstm_jax.kernels import layout as layout_lib

GPU_MAX_HIDDEN = 2048
GPU_MAX_GRID = 65535
PLATFORMS = ("gpu", "tpu")


def kernel(cell: str) -> layout_lib.Kernel:
  """The sizes of ``cell``'s kernels."""
  from lstm_jax.kernels import gru_pallas, lstm_pallas, rnn_pallas  # noqa: PLC0415
  return {"lstm": lstm_pallas.KERNEL, "rnn": rnn_pallas.KERNEL, "gru_reset_after": gru_pallas.KERNEL}[cell]


def max_hidden(cell: str, platform: str, matmul_dtype="float32", vmem_bytes: int | None = None) -> int:
  """The largest hidden size ``cell``'s kernels take on ``platform`` (TPU: for a chip with ``vmem_bytes`` of VMEM
  per core, default: the default device's)."""
  if platform == "gpu":
    return GPU_MAX_HIDDEN
  vmem = layout_lib.tpu_vmem_bytes() if vmem_bytes is None else vmem_bytes
  fits = lambda h: layout_lib.tpu_layout(kernel(cell), 1, 1, h, matmul_dtype, vmem) is not None
  hidden = 0
  while fits(hidden + 128):
    hidden += 128
  return hidden


def limit(cell: str, platform: str, hidden: int, matmul_dtype="float32", batch: int = 1, members: int = 1,
          vmem_bytes: int | None = None, member_devices: int = 1) -> str | None:
  """None when ``cell``'s kernels take this shape on ``platform`` (a population's members split over
  ``member_devices`` devices); else one line naming the limit."""
  dtype = jnp.dtype(matmul_dtype).name
  if platform in PLATFORMS and member_devices > 1:
    return (f"the {cell} kernel runs a population's members on the device that holds them, and these members do not "
            f"divide over the {member_devices} devices (a multiple of {member_devices} members would)")
  if platform == "tpu":
    largest = max_hidden(cell, platform, dtype, vmem_bytes)
    if hidden > largest:
      vmem = layout_lib.tpu_vmem_bytes() if vmem_bytes is None else vmem_bytes
      return (f"the {cell} kernel keeps W_h in TPU VMEM: hidden_size {hidden} ({dtype}) exceeds the largest that "
              f"fits this chip's {vmem >> 20} MiB, {largest}")
    return None
  if platform == "gpu":
    if hidden > GPU_MAX_HIDDEN:
      return (f"the {cell} kernel re-reads W_h every step: hidden_size {hidden} exceeds {GPU_MAX_HIDDEN}, the "
              f"largest the GPU kernels are checked at")
    if members > GPU_MAX_GRID or -(-batch // layout_lib.TRITON_BATCH_BLOCK) > GPU_MAX_GRID:
      return (f"the {cell} kernel's grid exceeds CUDA's {GPU_MAX_GRID} blocks per axis (batch {batch}, members "
              f"{members})")
    return None
  return None


def table(cells, vmem_by_chip: dict[str, int]) -> list[str]:
  """Markdown rows: the largest hidden size per cell and dtype, for each TPU chip (by VMEM) and for GPUs."""
  rows = ["| cell | matmul dtype | " + " | ".join(f"TPU {c} ({v >> 20} MiB VMEM)" for c, v in vmem_by_chip.items())
          + " | GPU |", "|---" * (len(vmem_by_chip) + 3) + "|"]
  for cell in cells:
    for dtype in ("float32", "bfloat16"):
      tpu = [str(max_hidden(cell, "tpu", dtype, v)) for v in vmem_by_chip.values()]
      rows.append(f"| {cell} | {dtype} | " + " | ".join(tpu) + f" | {max_hidden(cell, 'gpu', dtype)} |")
  return rows
