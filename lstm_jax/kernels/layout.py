"""The sizes of the Pallas kernels' blocks: padded time, batch and hidden sizes, the time chunk and the dot tile,
per backend, and on TPU the VMEM they take (``tpu_vmem_need``) against the chip's budget (``vmem_budget``).

- TPU (Mosaic): ``Hp = round_up(H, 128)``, one dot tile over all of ``Hp`` (``bh = Hp``); ``bB`` and ``Tc`` come
  from the chip's VMEM: ``W_h`` single-buffered, the sequence blocks double-buffered, the state blocks and the
  scratch, all within 3/4 of the VMEM of one TensorCore (``pltpu.get_tpu_info()``: 128 MiB on v5e / v6e, 64 MiB on
  v5p, 16 MiB on v4). VMEM use is ``G Hp^2 itemsize + 2 * 4 Tc bB Hp * seq_width + 24 bB Hp * num_states`` bytes,
  so it does not grow with T. ``tpu_layout`` returns None where not even the smallest blocks fit: the edge of
  ``lstm_jax.kernels.envelope``.
- GPU (Triton): one chunk (``Tc = T``), ``bB = 16`` (dots need M >= 16), ``Hp = next_pow2(max(H, 16))``
  (power-of-two blocks), dot tiles of ``bh = min(Hp, 128)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

BACKENDS = ("triton", "tpu")
TRITON_TILE = 128  # max side of one dot tile on Triton
TRITON_BATCH_BLOCK = 16  # Triton dots need M >= 16
TPU_MAX_BATCH_BLOCK = 256
TPU_MAX_CHUNK = 32  # steps per chunk: enough to hide a grid step's overhead
TPU_DEFAULT_VMEM = 64 << 20  # when no TPU can be asked (lowering or interpret mode on a CPU): v5p's, between v4's
                             # 16 MiB and v5e's / v6e's 128 MiB
F32 = 4  # bytes


class Layout(NamedTuple):
  """Padded sizes: time ``Tp`` in chunks of ``Tc``, batch ``Bp`` in blocks of ``bB``, hidden ``Hp`` in dot tiles
  of ``bh``; ``vmem`` is the bytes the TPU blocks need (0 on GPU)."""
  Tp: int
  Tc: int
  Bp: int
  bB: int
  Hp: int
  bh: int
  vmem: int = 0

  @property
  def num_chunks(self) -> int:
    return self.Tp // self.Tc


class Kernel(NamedTuple):
  """What sizes a cell's kernels: ``num_gates`` gate blocks in ``W_h``; ``seq_width``: the widest kernel's sequence
  blocks (inputs and outputs), in units of ``Hp`` columns; ``num_states``: its recurrent states."""
  num_gates: int
  seq_width: int
  num_states: int


def round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def next_pow2(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


def default_device():
  """The device programs are built for: ``jax.default_device``'s when set (``lstm-jax-compile`` sets a compile-only
  target's), else the first device; None when no backend answers."""
  device = jax.config.jax_default_device
  if device is not None and not isinstance(device, str):
    return device
  try:
    return jax.devices()[0]
  except RuntimeError:
    return None


def tpu_vmem_bytes() -> int:
  """VMEM of one TensorCore of the default device's TPU (``TPU_DEFAULT_VMEM`` when it is not a TPU)."""
  try:
    from jax.experimental.pallas import tpu as pltpu  # noqa: PLC0415
    return int(pltpu.get_tpu_info().vmem_capacity_bytes)
  except Exception:  # noqa: BLE001 (not a TPU, or a jax without get_tpu_info)
    return TPU_DEFAULT_VMEM


def vmem_budget(vmem_bytes: int) -> int:
  """The part of VMEM the blocks may use; the rest is Mosaic's internal scratch."""
  return vmem_bytes * 3 // 4


def tpu_vmem_need(kernel: Kernel, Tc: int, bB: int, Hp: int, itemsize: int) -> int:
  """Bytes of VMEM the TPU blocks take: ``W_h`` once, the sequence blocks twice, the state blocks (inputs and
  outputs, double-buffered) and the two-slot scratch."""
  weights = kernel.num_gates * Hp * Hp * itemsize
  sequences = 2 * Tc * bB * Hp * kernel.seq_width * F32
  states = kernel.num_states * (2 * 2 + 2) * bB * Hp * F32 + 2 * Hp * F32
  return weights + sequences + states


def tpu_layout(kernel: Kernel, T: int, B: int, H: int, matmul_dtype, vmem_bytes: int | None = None) -> Layout | None:
  """The largest batch block (with chunks of ``min(T, 8)`` steps), then the longest chunk up to ``TPU_MAX_CHUNK``,
  whose blocks fit the budget; the chunk is then evened out over the chunks so that the last one pads the least.
  None when not even ``bB = 8`` (16 for bfloat16), ``Tc = 1`` fits (the shape is outside the envelope)."""
  itemsize = jnp.dtype(matmul_dtype).itemsize
  sublanes = 16 if itemsize == 2 else 8
  Hp = round_up(H, 128)
  budget = vmem_budget(tpu_vmem_bytes() if vmem_bytes is None else vmem_bytes)
  fits = lambda Tc, bB: tpu_vmem_need(kernel, Tc, bB, Hp, itemsize) <= budget
  bB = min(round_up(B, sublanes), TPU_MAX_BATCH_BLOCK)
  while bB > sublanes and not fits(min(T, 8), bB):
    bB = max(sublanes, round_up(bB // 2, sublanes))
  if not fits(1, bB):
    return None
  longest = 1
  while longest < min(T, TPU_MAX_CHUNK) and fits(longest + 1, bB):
    longest += 1
  num_chunks = -(-T // longest)
  Tc = -(-T // num_chunks)
  return Layout(Tp=num_chunks * Tc, Tc=Tc, Bp=round_up(B, bB), bB=bB, Hp=Hp, bh=Hp,
                vmem=tpu_vmem_need(kernel, Tc, bB, Hp, itemsize))


def layout(backend: str, kernel: Kernel, T: int, B: int, H: int, matmul_dtype=jnp.float32) -> Layout:
  """Tile sizes of ``backend`` for a ``[T, B, H]`` problem (see the module docstring)."""
  if backend == "triton":
    Hp = next_pow2(max(H, 16))
    bB = TRITON_BATCH_BLOCK
    return Layout(Tp=T, Tc=T, Bp=round_up(B, bB), bB=bB, Hp=Hp, bh=min(Hp, TRITON_TILE))
  if backend == "tpu":
    lay = tpu_layout(kernel, T, B, H, matmul_dtype)
    if lay is None:
      raise ValueError(f"hidden size {H} ({jnp.dtype(matmul_dtype).name} W_h) does not fit this TPU's VMEM "
                       f"({tpu_vmem_bytes() >> 20} MiB); use --config.model.recurrence=fused_vjp (see "
                       f"lstm_jax.kernels.envelope).")
    return lay
  raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
