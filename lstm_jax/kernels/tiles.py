"""The design the Pallas recurrence kernels share (``lstm_pallas``, ``rnn_pallas``, ``gru_pallas``), and the code
for it: the padded layout, the grid over (members, batch blocks, time chunks), the state scratch, rolled tile loops
for the recurrent dots, backend / interpret resolution, compiler params and the ``custom_vjp`` plumbing. Each cell's
module says what its kernels compute, why its padded units stay zero and its limits; measurements of the compiled
kernels are in docs/accelerators.md ("Kernel measurements").

Two kernels per cell, behind a ``custom_vjp``: a forward ``pallas_call`` that walks the steps and, when
differentiated, saves what the backward needs; and a reverse ``pallas_call`` on the same grid that walks the steps
last to first, writes the gradient of the projected inputs and carries the state's gradient in the scratch. The
weight gradient ``dW_h = h_prev^T @ dgates`` is then one XLA matmul over all ``T*B`` rows (``weight_grad``).

Layout (every kernel): arrays carry a leading members axis K. A gate-blocked array ``[K, T, B, G*H]`` (G gate
blocks of H units: 4 for the LSTM, 3 for the GRU, 1 for the RNN) is viewed as ``[.., B, G, H]``; time is padded to
``Tp`` (a multiple of the chunk ``Tc``), batch to ``Bp``, each gate block to ``Hp`` units, and it is flattened back
to ``[K, Tp, Bp, G*Hp]``: gate ``g`` is the contiguous, tile-aligned column block ``[g*Hp, (g+1)*Hp)``. ``W_h
[K, H, G*H]`` gets zero rows and columns for the padded units (``[K, Hp, G*Hp]``), states ``[K, B, H]`` become
``[K, Bp, Hp]``. Padded batch rows are independent rows; padded steps are never computed; outputs are sliced back.

Grid ``(K, Bp / bB, Tp / Tc)``: a program owns one member, one batch block of ``bB`` rows and one time chunk of
``Tc`` steps; members and batch blocks are independent ("parallel"), chunks run in order ("arbitrary") and hand
the recurrent state on through a scratch ``[2, bB, Hp]`` float32 per state (two slots: step ``t`` reads one and
writes the other, so a tile written early in a step is never read by a later tile of the same step). A chunk
walks ``min(Tc, T - chunk * Tc)`` steps, so the padded tail of the last chunk is never computed. Sequence blocks
are ``[Tc, bB, d]`` (reverse kernels walk the chunks last to first); ``W_h`` has a constant block index, fetched
once per member. Per step and per hidden tile ``n`` (a rolled loop), a kernel adds ``h @ W_h[:, gate g, tile n]``
to each gate block's input (a rolled loop over the hidden tiles ``k`` of ``h``, float32 accumulation) and updates
that tile of the state; the reverse kernel computes the gate gradients tile by tile, then ``dh_{t-1} = dgates @
W_h^T`` tile by tile (``W_h^T`` transposed once in the wrapper).

Backends (block sizes: ``lstm_jax.kernels.layout``):
- TPU (Mosaic): one dot tile over all of ``Hp`` (the MXU takes big dots), so each tile loop runs once; ``bB`` and
  ``Tc`` sized to the chip's VMEM, where ``W_h`` is DMA'd once per member and stays for the whole sequence
  (single-buffered) while the chunks stream through, so VMEM holds ``W_h`` plus two chunks, not the whole sequence
  (``lstm_jax.kernels.envelope`` gives the largest H per chip); the compiler's scoped-VMEM limit is raised to what
  the blocks need. The state scratch is VMEM, so the state never leaves the chip between steps.
- GPU (Triton, selected by ``pallas.triton.CompilerParams(num_warps, num_stages=1)``): one chunk (``Tc = T``:
  Triton has no sequential grid axis, so a program walks the whole sequence; its blocks are windows into HBM, not
  copies). The state scratch is an extra HBM output (Triton has no scratch), served by L1/L2, with a block barrier
  after each step's writes. ``W_h``'s tiles are re-read every step (from L2 while it fits there) and the sequences
  are streamed per step. The tile loops are ``fori_loop``s over traced tile indices (dynamic slices of the refs),
  so one step is the same few dots whatever H: a kernel's code does not grow with H and neither does its compile
  time; registers hold one ``[bB, bh]`` accumulator per gate and one tile of ``h``, not the whole state. Mosaic GPU
  (Pallas's Hopper backend) is not used: it stages whole blocks in shared memory, and its lowering rule is
  registered only when the CUDA plugin starts on a real GPU, so it cannot be compiled for a chip this machine lacks.
- ``matmul_dtype=bfloat16`` stores ``W_h`` in bfloat16 (half the bytes) and casts the state and gate gradients to
  bfloat16 for the dots only; accumulation, state and gates stay float32.
- ``interpret=None``: interpret mode when ``jax.default_backend() == "cpu"`` (semantics only, slow), else
  compiled. ``backend=None``: "triton" on GPU and CPU (so CPU interpret runs the GPU layout), "tpu" on TPU.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from lstm_jax.kernels.layout import BACKENDS, Layout, tpu_vmem_bytes

class Config(NamedTuple):
  """Static (hashable) kernel settings."""
  matmul_dtype: str
  interpret: bool
  backend: str


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


def compiler_params(cfg: Config, lay: Layout):
  """Triton: warps by tile size, one stage. TPU: members and batch blocks parallel, chunks in order, and a
  scoped-VMEM limit that covers the blocks."""
  if cfg.backend == "triton":
    from jax.experimental.pallas import triton as pl_triton  # noqa: PLC0415
    return pl_triton.CompilerParams(num_warps=4 if lay.bh * lay.bB <= 64 * 16 else 8, num_stages=1)
  from jax.experimental.pallas import tpu as pltpu  # noqa: PLC0415
  limit = int(min(max(lay.vmem + lay.vmem // 4 + (4 << 20), 32 << 20), tpu_vmem_bytes()))
  return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary"), vmem_limit_bytes=limit)


def sigmoid(x):
  """``tanh(x/2)/2 + 1/2``: one tanh (as lstm_fused_vjp)."""
  return 0.5 * jnp.tanh(0.5 * x) + 0.5


# ----------------------------------------------------------------------------------------------------------------
# Inside a kernel: column slices, rolled tile loops, the recurrent dots, the walk over a chunk's steps.
# ----------------------------------------------------------------------------------------------------------------

class Columns(NamedTuple):
  """Column slices of one program's blocks: hidden tile ``n`` of a state ``[bB, Hp]`` and tile ``n`` of gate ``g``
  in a gate-blocked ``[bB, G*Hp]``; ``n`` may be traced (a rolled loop's index)."""
  Hp: int
  bh: int

  @property
  def num_tiles(self) -> int:
    return self.Hp // self.bh

  def _start(self, offset):
    return offset if isinstance(offset, int) else pl.multiple_of(offset, self.bh)

  def h(self, n):
    return pl.ds(self._start(n * self.bh), self.bh)

  def gate(self, g: int, n):
    return pl.ds(self._start(g * self.Hp + n * self.bh), self.bh)


def tile_loop(num: int, body: Callable, init=None):
  """``body(n, carry) -> carry`` for ``n`` in ``range(num)``: a rolled ``fori_loop`` (the body is compiled once,
  whatever ``num``), or one direct call when ``num == 1``."""
  if num == 1:
    return body(0, init)
  return jax.lax.fori_loop(0, num, body, init)


def recurrent_dots(accs, state_ref, slot, w_ref, gates, n, cols: Columns, matmul_dtype):
  """``accs[i] + h @ W_h[:, tile n of gates[i]]`` for the state ``h = state_ref[slot] [bB, Hp]``: a rolled loop
  over the hidden tiles ``k``, each ``[bB, bh] x [bh, bh]`` dots with float32 accumulation."""

  def body(k, accs):
    hk = state_ref[slot, :, cols.h(k)].astype(matmul_dtype)
    return tuple(acc + jnp.dot(hk, w_ref[cols.h(k), cols.gate(g, n)], preferred_element_type=jnp.float32)
                 for g, acc in zip(gates, accs))

  return tile_loop(cols.num_tiles, body, tuple(accs))


def transposed_dots(acc, dgate_refs, t, wt_ref, k, cols: Columns, matmul_dtype):
  """``acc + sum_(g, n) dgates[g, n] @ W_h^T[tile n of gate g, tile k]``: ``dgate_refs`` pairs ``(ref, g_in_ref,
  g_in_W)`` of sequence refs ``[Tc, bB, *]`` read at step ``t``; a rolled loop over ``n``."""

  def body(n, acc):
    for ref, g_ref, g_w in dgate_refs:
      d = ref[t, :, cols.gate(g_ref, n)].astype(matmul_dtype)
      acc = acc + jnp.dot(d, wt_ref[cols.gate(g_w, n), cols.h(k)], preferred_element_type=jnp.float32)
    return acc

  return tile_loop(cols.num_tiles, body, acc)


def hidden_grads(dh_ref, write, dgate_refs, t, wt_ref, cols: Columns, matmul_dtype, add: bool = False) -> None:
  """``dh_ref[write] = dgates[t] @ W_h^T`` (``add``: ``+=``), tile by tile: the recurrent part of ``dh_{t-1}``;
  ``dgate_refs`` as in ``transposed_dots``."""

  def body(k, carry):
    acc = dh_ref[write, :, cols.h(k)] if add else jnp.zeros((dh_ref.shape[1], cols.bh), jnp.float32)
    dh_ref[write, :, cols.h(k)] = transposed_dots(acc, dgate_refs, t, wt_ref, k, cols, matmul_dtype)
    return carry

  tile_loop(cols.num_tiles, body, 0)


def copy_state(dst_ref, slot, src_ref, cols: Columns) -> None:
  """``dst_ref[slot] = src_ref`` (``[bB, Hp]``) tile by tile, as float32."""

  def body(n, carry):
    dst_ref[slot, :, cols.h(n)] = src_ref[:, cols.h(n)].astype(jnp.float32)
    return carry

  tile_loop(cols.num_tiles, body, 0)


def store_state(dst_ref, src_ref, slot, cols: Columns) -> None:
  """``dst_ref = src_ref[slot]`` tile by tile."""

  def body(n, carry):
    dst_ref[:, cols.h(n)] = src_ref[slot, :, cols.h(n)].astype(dst_ref.dtype)
    return carry

  tile_loop(cols.num_tiles, body, 0)


def slot(step):
  """The scratch slot of a (traced) step index: ``step % 2`` (``lax.rem``: Triton lowers ``jnp.remainder``'s sign
  fix-up with mismatched types)."""
  return step % 2 if isinstance(step, int) else jax.lax.rem(step, 2)


class Walk(NamedTuple):
  """One program's walk over its time chunk: ``T`` real steps in chunks of ``Tc``; ``reverse`` walks last to
  first."""
  T: int
  Tc: int
  num_chunks: int
  reverse: bool
  barrier: bool  # a block barrier after each step's writes (compiled Triton: the state goes through L1/L2)

  def chunk(self):
    """The chunk this program walks (traced; ``0`` when there is one)."""
    if self.num_chunks == 1:
      return 0
    c = pl.program_id(2)
    return self.num_chunks - 1 - c if self.reverse else c

  def is_first(self):
    return True if self.num_chunks == 1 else pl.program_id(2) == 0

  def is_last(self):
    return True if self.num_chunks == 1 else pl.program_id(2) == self.num_chunks - 1

  def run(self, step: Callable) -> None:
    """``step(t, tg)`` for each step of the chunk in order: ``t`` indexes the sequence blocks, ``tg`` is the global
    step (both traced)."""
    chunk = self.chunk()
    num = self.T if self.num_chunks == 1 else jnp.minimum(self.Tc, self.T - chunk * self.Tc)
    self.sync()  # the state the first chunk copied in is read by other threads of the block

    def body(s, carry):
      t = num - 1 - s if self.reverse else s
      step(t, chunk * self.Tc + t)
      self.sync()
      return carry

    jax.lax.fori_loop(0, num, body, 0)

  def sync(self) -> None:
    """A block barrier (compiled Triton only): what the block wrote is seen by all its threads after it."""
    if self.barrier:
      from jax.experimental.pallas import triton as pl_triton  # noqa: PLC0415
      pl_triton.debug_barrier()


def when(condition, *fns: Callable) -> None:
  """Each of ``fns()`` when ``condition`` (a Python bool or a traced one)."""
  def run():
    for fn in fns:
      fn()
  if condition is True:
    run()
  else:
    pl.when(condition)(run)


def walk_settings(cfg: Config, lay: Layout, T: int, reverse: bool) -> dict:
  """The static keyword arguments every kernel takes: its ``walk``, ``cols`` and ``matmul_dtype``."""
  walk = Walk(T=T, Tc=lay.Tc, num_chunks=lay.num_chunks, reverse=reverse,
              barrier=cfg.backend == "triton" and not cfg.interpret)
  return dict(walk=walk, cols=Columns(lay.Hp, lay.bh), matmul_dtype=jnp.dtype(cfg.matmul_dtype))


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
  """``[K, T, B, G*H] -> [K, Tp, Bp, G*Hp]`` (float32), padding each gate block separately."""
  x = x.astype(jnp.float32).reshape(*x.shape[:-1], num_gates, H)
  x = jnp.pad(x, [(0, 0), (0, lay.Tp - x.shape[1]), (0, lay.Bp - B), (0, 0), (0, lay.Hp - H)])
  return x.reshape(*x.shape[:-2], num_gates * lay.Hp)


def unpad_gates(x, T: int, B: int, H: int, lay: Layout, num_gates: int):
  """``[K, Tp, Bp, G*Hp] -> [K, T, B, G*H]``."""
  x = x.reshape(*x.shape[:-1], num_gates, lay.Hp)[:, :T, :B, :, :H]
  return x.reshape(*x.shape[:-2], num_gates * H)


def pad_state(x, B: int, H: int, lay: Layout):
  """A state ``[K, B, H] -> [K, Bp, Hp]`` or a sequence ``[K, T, B, H] -> [K, Tp, Bp, Hp]``, in float32."""
  time = [(0, lay.Tp - x.shape[1])] if x.ndim == 4 else []
  return jnp.pad(x.astype(jnp.float32), [(0, 0)] + time + [(0, lay.Bp - B), (0, lay.Hp - H)])


def unpad_state(x, B: int, H: int, dtype, T: int | None = None):
  """``[K, Bp, Hp] -> [K, B, H]`` or (``T``) ``[K, Tp, Bp, Hp] -> [K, T, B, H]``, in ``dtype``."""
  if T is not None:
    x = x[:, :T]
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
  """Block specs (and float32 output shapes) over the grid ``(K, Bp / bB, Tp / Tc)``."""
  K: int
  lay: Layout
  reverse: bool = False
  single_buffer_weights: bool = False

  def seq(self, d: int):
    """``[K, Tp, Bp, d]`` in ``[Tc, bB, d]`` blocks, chunk by chunk (last to first when ``reverse``)."""
    last = self.lay.num_chunks - 1
    chunk = (lambda c: last - c) if self.reverse else (lambda c: c)
    return pl.BlockSpec((None, self.lay.Tc, self.lay.bB, d), lambda k, b, c: (k, chunk(c), b, 0))

  def state(self):
    """``[K, Bp, Hp]`` in ``[bB, Hp]`` blocks."""
    return pl.BlockSpec((None, self.lay.bB, self.lay.Hp), lambda k, b, c: (k, b, 0))

  def whole(self, rows: int, cols: int):
    """``[K, rows, cols]`` (a weight, a bias row): the member's whole matrix, fetched once per member."""
    if self.single_buffer_weights:
      return pl.BlockSpec((None, rows, cols), lambda k, b, c: (k, 0, 0), pipeline_mode=pl.Buffered(1))
    return pl.BlockSpec((None, rows, cols), lambda k, b, c: (k, 0, 0))

  def seq_out(self, d: int):
    return jax.ShapeDtypeStruct((self.K, self.lay.Tp, self.lay.Bp, d), jnp.float32), self.seq(d)

  def state_out(self):
    return jax.ShapeDtypeStruct((self.K, self.lay.Bp, self.lay.Hp), jnp.float32), self.state()

  def scratch_out(self):
    """Triton's stand-in for a scratch: ``[K, Bp / bB, 2, bB, Hp]``, one two-slot block per program."""
    nB = self.lay.Bp // self.lay.bB
    shape = (self.K, nB, 2, self.lay.bB, self.lay.Hp)
    return (jax.ShapeDtypeStruct(shape, jnp.float32),
            pl.BlockSpec((None, None, 2, self.lay.bB, self.lay.Hp), lambda k, b, c: (k, b, 0, 0, 0)))


def blocks_for(cfg: Config, K: int, lay: Layout, reverse: bool = False) -> Blocks:
  return Blocks(K, lay, reverse, single_buffer_weights=cfg.backend == "tpu" and not cfg.interpret)


def call(kernel, name: str, cfg: Config, blocks: Blocks, args, in_specs, outs, num_states: int):
  """One ``pallas_call`` of ``kernel`` over the grid ``(K, Bp / bB, Tp / Tc)``; ``outs``: ``(shape, spec)`` pairs;
  the kernel's last ``num_states`` refs are two-slot state scratches ``[2, bB, Hp]`` float32 (VMEM on TPU, extra
  outputs on Triton, dropped here)."""
  lay = blocks.lay
  scratch_shapes = ()
  if cfg.backend == "tpu":
    from jax.experimental.pallas import tpu as pltpu  # noqa: PLC0415
    scratch_shapes = [pltpu.VMEM((2, lay.bB, lay.Hp), jnp.float32)] * num_states
  else:
    outs = list(outs) + [blocks.scratch_out()] * num_states
  out_shape, out_specs = (list(x) for x in zip(*outs))
  results = pl.pallas_call(
      kernel, out_shape=out_shape, grid=(blocks.K, lay.Bp // lay.bB, lay.num_chunks), in_specs=list(in_specs),
      out_specs=out_specs, scratch_shapes=scratch_shapes, interpret=cfg.interpret,
      compiler_params=compiler_params(cfg, lay), name=name)(*args)
  return results if cfg.backend == "tpu" else results[:len(results) - num_states]


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

