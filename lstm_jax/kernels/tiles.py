"""What the Pallas recurrence kernels share (``lstm_pallas``, ``rnn_pallas``, ``gru_pallas``): tile choice, the
per-gate padded layout, backend / interpret resolution, compiler params, the in-kernel tiled dots, the
``pallas_call`` over the grid ``(K, Bp / bB)`` and the ``custom_vjp`` plumbing.

Layout (every kernel): arrays carry a leading members axis K. A gate-blocked array ``[K, (T,) B, G*H]`` (G gate
blocks of H units: 4 for the LSTM, 3 for the GRU, 1 for the RNN) is viewed as ``[.., B, G, H]``, batch is padded
to ``Bp`` and each gate block to ``Hp`` units, and it is flattened back to ``[.., Bp, G*Hp]``: gate ``g`` is the
contiguous, tile-aligned column block ``[g*Hp, (g+1)*Hp)``. ``W_h [K, H, G*H]`` gets zero rows and zero columns for
the padded units (``[K, Hp, G*Hp]``), states ``[K, (T,) B, H]`` become ``[K, (T,) Bp, Hp]``. Each cell's module
says why its padded units stay exactly zero.

Tiles: Triton (GPU) needs power-of-two block dims and dot operands >= 16: ``Hp = next_pow2(max(H, 16))``,
``bB = 16``, and the dots are split statically into ``bh x bh`` tiles with ``bh = min(Hp, 128)`` (states are
carried as tuples of ``[bB, bh]`` tiles). Mosaic TPU: ``(8, 128)`` f32 / ``(16, 128)`` bf16 tiles,
``Hp = round_up(H, 128)``, ``bB = round_up(B, 8 or 16)`` up to 256 rows, one tile over all of ``Hp``.

``interpret=None``: interpret mode when ``jax.default_backend() == "cpu"``, else compiled. ``backend=None``:
"triton" on GPU and CPU (so CPU interpret runs the GPU layout), "tpu" on TPU. GPU kernels are Triton kernels,
selected by ``pallas.triton.CompilerParams`` (``pallas_call`` has no ``backend=`` argument in jax 0.10).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

BACKENDS = ("triton", "tpu")
TRITON_TILE = 128  # max side of one dot tile on Triton
TRITON_BATCH_BLOCK = 16  # Triton dots need M >= 16
TPU_MAX_BATCH_BLOCK = 256


class Config(NamedTuple):
  """Static (hashable) kernel settings."""
  matmul_dtype: str
  interpret: bool
  backend: str


class Layout(NamedTuple):
  """Padded sizes: batch ``Bp`` in blocks of ``bB``, hidden ``Hp`` in dot tiles of ``bh``."""
  Bp: int
  bB: int
  Hp: int
  bh: int


def round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def next_pow2(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


def layout(backend: str, batch: int, hidden: int, matmul_dtype=jnp.float32) -> Layout:
  """Tile sizes of ``backend`` for a ``[B, H]`` problem (see the module docstring)."""
  if backend == "triton":
    Hp = next_pow2(max(hidden, 16))
    bB = TRITON_BATCH_BLOCK
    return Layout(Bp=round_up(batch, bB), bB=bB, Hp=Hp, bh=min(Hp, TRITON_TILE))
  if backend == "tpu":
    sublanes = 16 if jnp.dtype(matmul_dtype) == jnp.bfloat16 else 8
    bB = min(round_up(batch, sublanes), TPU_MAX_BATCH_BLOCK)
    Hp = round_up(hidden, 128)
    return Layout(Bp=round_up(batch, bB), bB=bB, Hp=Hp, bh=Hp)
  raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def resolve(matmul_dtype, interpret, backend) -> Config:
  """The static settings of a call: ``None`` interpret / backend resolved from ``jax.default_backend()``."""
  platform = jax.default_backend()
  if interpret is None:
    interpret = platform == "cpu"
  if backend is None:
    backend = "tpu" if platform == "tpu" else "triton"
  if backend == "mosaic_tpu":
    backend = "tpu"
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS} (GPU: triton, TPU: tpu), got {backend!r}")
  dtype = jnp.dtype(matmul_dtype)
  if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
    raise ValueError(f"matmul_dtype must be float32 or bfloat16, got {dtype}")
  return Config(matmul_dtype=dtype.name, interpret=bool(interpret), backend=backend)


def compiler_params(cfg: Config, lay: Layout, vmem_bytes: int):
  """Triton: warps by tile size, one stage. TPU: both grid axes parallel, a VMEM limit for the blocks."""
  if cfg.backend == "triton":
    from jax.experimental.pallas import triton as pl_triton
    return pl_triton.CompilerParams(num_warps=4 if lay.bh * lay.bB <= 64 * 16 else 8, num_stages=1)
  from jax.experimental.pallas import tpu as pltpu
  limit = int(min(max(2 * vmem_bytes + (4 << 20), 32 << 20), 100 << 20))
  return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel"), vmem_limit_bytes=limit)


def sigmoid(x):
  """``tanh(x/2)/2 + 1/2``: one tanh (as lstm_fused_vjp)."""
  return 0.5 * jnp.tanh(0.5 * x) + 0.5


# ----------------------------------------------------------------------------------------------------------------
# Inside a kernel: static column slices and the tiled dots.
# ----------------------------------------------------------------------------------------------------------------

class Columns(NamedTuple):
  """Column slices of one program's blocks: hidden tile ``n`` of a state ``[bB, Hp]`` and tile ``n`` of gate ``g``
  in a gate-blocked ``[bB, G*Hp]``."""
  Hp: int
  bh: int

  @property
  def num_tiles(self) -> int:
    return self.Hp // self.bh

  def h(self, n: int):
    return pl.ds(n * self.bh, self.bh)

  def gate(self, g: int, n: int):
    return pl.ds(g * self.Hp + n * self.bh, self.bh)


def load_tiles(ref, cols: Columns) -> tuple[jax.Array, ...]:
  """A state block ``[bB, Hp]`` as float32 ``[bB, bh]`` tiles."""
  return tuple(ref[:, cols.h(n)].astype(jnp.float32) for n in range(cols.num_tiles))


def store_tiles(ref, state_tiles, cols: Columns) -> None:
  for n, tile in enumerate(state_tiles):
    ref[:, cols.h(n)] = tile.astype(ref.dtype)


def gate_dot(acc, h_tiles, w_ref, g: int, n: int, cols: Columns):
  """``acc + h @ W_h[:, tile n of gate g]``: ``[bB, bh] x [bh, bh]`` dots over the hidden tiles, float32."""
  for k in range(cols.num_tiles):
    term = jnp.dot(h_tiles[k], w_ref[cols.h(k), cols.gate(g, n)], preferred_element_type=jnp.float32)
    acc = term if acc is None else acc + term
  return acc


def gate_dot_t(acc, dgate_tiles, wt_ref, k: int, num_gates: int, cols: Columns):
  """``acc + dgates @ W_h^T[:, tile k]`` from ``dgate_tiles[g, n]`` and ``wt_ref [G*Hp, Hp]``, float32."""
  for g in range(num_gates):
    for n in range(cols.num_tiles):
      term = jnp.dot(dgate_tiles[g, n], wt_ref[cols.gate(g, n), cols.h(k)], preferred_element_type=jnp.float32)
      acc = term if acc is None else acc + term
  return acc


# ----------------------------------------------------------------------------------------------------------------
# Around a kernel: padding, blocks, the pallas_call (all arrays carry the members axis K).
# ----------------------------------------------------------------------------------------------------------------

def check_shapes(W_h, xproj, num_gates: int) -> tuple[int, int, int, int]:
  """``(K, T, B, H)`` of ``W_h [K, H, G*H]`` and ``xproj [K, T, B, G*H]``."""
  (K, T, B, G), H = xproj.shape, W_h.shape[1]
  if G != num_gates * H or W_h.shape != (K, H, G):
    raise ValueError(f"W_h {W_h.shape} and xproj {xproj.shape} do not match [K, H, {num_gates}H] / "
                     f"[K, T, B, {num_gates}H]")
  return K, T, B, H


def pad_gates(x, B: int, H: int, lay: Layout, num_gates: int):
  """``[K, (T,) B, G*H] -> [K, (T,) Bp, G*Hp]``, padding each gate block separately."""
  x = x.reshape(*x.shape[:-1], num_gates, H)
  x = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(0, lay.Bp - B), (0, 0), (0, lay.Hp - H)])
  return x.reshape(*x.shape[:-2], num_gates * lay.Hp)


def unpad_gates(x, B: int, H: int, lay: Layout, num_gates: int):
  """``[K, (T,) Bp, G*Hp] -> [K, (T,) B, G*H]``."""
  x = x.reshape(*x.shape[:-1], num_gates, lay.Hp)[..., :B, :, :H]
  return x.reshape(*x.shape[:-2], num_gates * H)


def pad_state(x, B: int, H: int, lay: Layout):
  """``[K, (T,) B, H] -> [K, (T,) Bp, Hp]`` in float32."""
  return jnp.pad(x.astype(jnp.float32), [(0, 0)] * (x.ndim - 2) + [(0, lay.Bp - B), (0, lay.Hp - H)])


def unpad_state(x, B: int, H: int, dtype):
  """``[K, (T,) Bp, Hp] -> [K, (T,) B, H]`` in ``dtype``."""
  return x[..., :B, :H].astype(dtype)


def pad_weights(W_h, H: int, lay: Layout, dtype, num_gates: int):
  """``[K, H, G*H] -> [K, Hp, G*Hp]`` in ``dtype``, with zero rows and zero columns for the padded units."""
  W = W_h.reshape(W_h.shape[0], H, num_gates, H)
  W = jnp.pad(W, [(0, 0), (0, lay.Hp - H), (0, 0), (0, lay.Hp - H)])
  return W.reshape(W_h.shape[0], lay.Hp, num_gates * lay.Hp).astype(dtype)


def pad_row(b, H: int, lay: Layout):
  """A per-unit vector ``[K, H] -> [K, 1, Hp]`` in float32 (zero for the padded units)."""
  return jnp.pad(b.astype(jnp.float32), [(0, 0), (0, lay.Hp - H)])[:, None, :]


class Blocks(NamedTuple):
  """Block specs (and float32 output shapes) over the grid ``(K, Bp / bB)``: each program owns one member and one
  batch block, the whole sequence and the whole of ``W_h``."""
  K: int
  T: int
  lay: Layout

  def seq(self, d: int):
    """``[K, T, Bp, d]`` in ``[T, bB, d]`` blocks."""
    return pl.BlockSpec((None, self.T, self.lay.bB, d), lambda k, b: (k, 0, b, 0))

  def state(self):
    """``[K, Bp, Hp]`` in ``[bB, Hp]`` blocks."""
    return pl.BlockSpec((None, self.lay.bB, self.lay.Hp), lambda k, b: (k, b, 0))

  def whole(self, rows: int, cols: int):
    """``[K, rows, cols]`` (a weight, a bias row): the member's whole matrix in every program."""
    return pl.BlockSpec((None, rows, cols), lambda k, b: (k, 0, 0))

  def seq_out(self, d: int):
    return jax.ShapeDtypeStruct((self.K, self.T, self.lay.Bp, d), jnp.float32), self.seq(d)

  def state_out(self):
    return jax.ShapeDtypeStruct((self.K, self.lay.Bp, self.lay.Hp), jnp.float32), self.state()


def _block_bytes(spec, itemsize: int) -> int:
  return math.prod(d for d in spec.block_shape if isinstance(d, int)) * itemsize


def call(kernel, name: str, cfg: Config, blocks: Blocks, args, in_specs, outs):
  """One ``pallas_call`` of ``kernel`` over the grid ``(K, Bp / bB)``; ``outs``: ``(shape, spec)`` pairs."""
  out_shape, out_specs = (list(x) for x in zip(*outs))
  vmem = (sum(_block_bytes(s, jnp.dtype(a.dtype).itemsize) for s, a in zip(in_specs, args))
          + sum(_block_bytes(s, jnp.dtype(o.dtype).itemsize) for o, s in outs))
  return pl.pallas_call(
      kernel, out_shape=out_shape, grid=(blocks.K, blocks.lay.Bp // blocks.lay.bB), in_specs=list(in_specs),
      out_specs=out_specs, interpret=cfg.interpret, compiler_params=compiler_params(cfg, blocks.lay, vmem),
      name=name)(*args)


# ----------------------------------------------------------------------------------------------------------------
# The custom_vjp, the weight gradient, the members axis.
# ----------------------------------------------------------------------------------------------------------------

def kernel_vjp(forward: Callable, backward: Callable) -> Callable:
  """``run(cfg, *primals)``: ``forward(cfg, *primals, save=False)[0]``, differentiated by
  ``backward(cfg, residuals, cotangents) -> one gradient per primal``, where ``forward(..., save=True)`` returns
  ``(outputs, residuals)``."""

  @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
  def run(cfg, *primals):
    return forward(cfg, *primals, save=False)[0]

  run.defvjp(lambda cfg, *primals: forward(cfg, *primals, save=True), backward)
  return run


def previous_states(h0, hs):
  """``h_{t-1}`` for every step: ``[K, B, H]``, ``[K, T, B, H] -> [K, T, B, H]`` float32."""
  return jnp.concatenate([h0[:, None].astype(jnp.float32), hs[:, :-1].astype(jnp.float32)], axis=1)


def weight_grad(h_prev, dgates):
  """``dW_h [K, H, G*H] = h_prev^T @ dgates`` over all ``T*B`` rows: one XLA matmul after the reverse kernel."""
  return jnp.einsum("ktbh,ktbg->khg", h_prev, dgates)


def on_members(population_fn, keys, params, xproj, carry, unroll, **kwargs):
  """``population_fn`` directly when ``W_h`` has a members axis (``[K, H, G*H]``), else as one member (K = 1);
  ``keys``: the params the kernel reads."""
  if params["W_h"].ndim == 3:
    return population_fn(params, xproj, carry, unroll, **kwargs)
  add = lambda tree: jax.tree.map(lambda a: a[None], tree)
  final, hs = population_fn({k: params[k][None] for k in keys}, xproj[None], add(carry), unroll, **kwargs)
  return jax.tree.map(lambda a: a[0], final), hs[0]


def run_layer(family, recurrence_fn, params, xs_TBI, carry, unroll, **kwargs):
  """A whole layer over ``[T, B, in]``: ``family``'s hoisted input projection, then ``recurrence_fn``."""
  if carry is None:
    carry = family.zero_carry(xs_TBI.shape[1], params["W_h"].shape[0], xs_TBI.dtype)
  return recurrence_fn(params, family.project_inputs(params, xs_TBI), carry, unroll, **kwargs)
