"""The LSTM recurrence as two Pallas kernels (forward, reverse, each over time chunks) behind a ``custom_vjp``.

Same contract as ``lstm_jax.cells.lstm_fused_vjp.recurrence``: parameters ``{"W_h": [H, 4H], ...}`` (gate order
i, f, g, o), projected inputs ``xproj [T, B, 4H]`` (time-major, bias included), carry ``LSTMCarry(h, c)``
``[B, H]``; returns ``(final carry, hs [T, B, H])`` and the gradients w.r.t. ``W_h``, ``xproj`` and the carry. A
leading members axis (``W_h [K, H, 4H]``, ``xproj [K, T, B, 4H]``, carry ``[K, B, H]``, see
``population_recurrence``) runs as the same single ``pallas_call`` with K as a grid axis.

Design
------
- Forward: ONE ``pallas_call`` over the grid ``(K, Bp / bB, Tp / Tc)`` (``lstm_jax.kernels.tiles``): a program
  owns one member, one batch block and one time chunk, and walks the chunk's steps with ``lax.fori_loop``. ``h``
  and ``c`` live in a two-slot scratch ``[2, bB, Hp]`` (VMEM on TPU; an L1/L2-served HBM block on GPU) that
  carries them across steps and chunks, so the state never leaves the chip between steps on TPU. Per step and per
  hidden tile ``n`` (a rolled loop): the four gate pre-activations ``xproj + h @ W_h[:, gate g, tile n]`` (a
  rolled loop over the hidden tiles ``k`` of ``h``, ``preferred_element_type=float32``) and the fused gate update
  (``sigmoid(x) = tanh(x/2)/2 + 1/2``, as lstm_fused_vjp); it writes ``hs[t]`` and, when differentiated, the
  activated gates ``acts [T, B, 4H]`` and the previous cell ``c_prev [T, B, H]`` (the backward recomputes
  ``c = f*c_prev + i*g`` and ``tanh(c)`` from them).
- Backward: ONE reverse ``pallas_call`` on the same grid, chunks last to first; ``(dh, dc)`` in the scratch. Per
  step: the gate gradients tile by tile (written to ``dgates [T, B, 4H]``, which is also the gradient of
  ``xproj``), then ``dh_{t-1} = dgates @ W_h^T`` tile by tile (``W_h^T`` transposed once in the wrapper); it ends
  with ``(dh0, dc0)``. ``dW_h = h_prev^T @ dgates`` is then one XLA matmul over all ``T*B`` rows, as in
  lstm_fused_vjp.
- Memory layout: the wrapper views ``4H`` as ``[4, H]``, pads time to ``Tp``, batch to ``Bp`` and hidden per gate
  block to ``Hp`` and flattens back to ``[.., Bp, 4*Hp]``, so each gate is a contiguous, tile-aligned column block
  ``[g*Hp, (g+1)*Hp)``. Padded units get zero weights (rows and columns) and zero inputs, so their
  pre-activation is 0, ``g = tanh(0) = 0``, ``c_pad`` stays exactly 0 and ``h_pad = sigmoid(0)*tanh(0) = 0``:
  they never leak into real units. Padded batch rows are independent rows; padded steps are never computed.
  Outputs are sliced back.
- One step's code. GPU (Triton, ``bh = 128``): the forward step is two nested rolled loops whose body is 4
  ``[16, 128] x [128, 128]`` dots and one gate update of ``[16, 128]`` tiles; the backward step is one rolled
  loop of gate gradients and two nested rolled loops of 4 dots each. That is the same code for H = 32 and
  H = 2048, so the PTX the assembler sees and the compile time do not grow with H (they grew with
  ``4 (Hp/128)^2`` statically unrolled dots before: 256 per step at H = 1024). Registers hold four ``[16, 128]``
  float32 accumulators and one tile of ``h`` at a time, not the whole state. What ptxas reported for an H100
  (sm_90, jax 0.12.0.1, ``--xla_gpu_ptx_compiler_extra_flags=-v``, 8 warps): forward-save and backward both use
  255 registers and one barrier, with small spills (88 / 312 bytes of spill stores at H = 1024 float32, 88 / 288
  at H = 2048): the same at both sizes, as the code is. The four ``[128, 128]`` float32 ``W_h`` tiles a ``k``
  iteration loads are most of that pressure; ``bh = 64`` would halve it (not measured on a GPU). TPU: one tile
  over all of ``Hp`` (the MXU takes big dots), so each loop runs once and a step is 4 ``[bB, Hp] x [Hp, Hp]``
  dots.
- Where things live. TPU: ``W_h [Hp, 4Hp]`` is DMA'd into VMEM once per member (constant block index, single
  buffer) and stays resident; the sequence blocks ``[Tc, bB, 4Hp]`` are pipelined chunk by chunk, so VMEM holds
  ``W_h`` plus two chunks, not the whole sequence (``layout.tpu_layout`` picks ``bB`` and ``Tc`` from the chip's
  VMEM; ``lstm_jax.kernels.envelope`` gives the largest H per chip). GPU: refs are windows into HBM; the ``W_h``
  tiles are re-read every step (from L2: 50 MB on an H100 holds the float32 ``W_h`` up to H ~ 1800), xproj / hs /
  acts are streamed per step, the state goes through the scratch (L1) with a block barrier after each step.
  ``matmul_dtype=bfloat16`` stores ``W_h`` in bf16 (half the bytes) and casts h / dgates to bf16 for the dots
  only; accumulation, state and gates stay float32.
- Backend choice (GPU): Triton, selected by passing ``pallas.triton.CompilerParams(num_warps, num_stages=1)``.
  Mosaic GPU (Pallas's Hopper backend) stages whole blocks in shared memory, and its lowering rule is registered
  only when the CUDA plugin starts on a real GPU, so it cannot be compiled for a chip this machine lacks.
- ``interpret=None``: interpret mode when ``jax.default_backend() == "cpu"`` (semantics only, slow), else
  compiled. ``backend=None``: "triton" on GPU and CPU (so CPU interpret runs the GPU layout), "tpu" on TPU.

Known limits
- GPU: one member inside ``lstm_persistent``'s envelope (batch up to 128, hidden units over at most half the SMs)
  runs the persistent kernel instead of these. Here every batch-block program re-reads all of ``W_h`` every step,
  and the programs are only ``K * Bp / 16``
  thread blocks: 2 for W1 (batch 32), 8 for W4 (batch 128), 32 for a population of 16 W1 members, against an
  H100's 132 SMs (populations and batches over 128 rows). Run time has not been measured on a GPU.
- TPU: ``W_h`` must fit in VMEM (``lstm_jax.kernels.envelope``); outside the envelope ``recurrence=auto`` uses
  fused_vjp.
- ``unroll`` is accepted for the contract and ignored. Reverse mode only (custom_vjp).
- Cells: kernels exist for the LSTM, the tanh RNN and the reset-after GRU (``model.PALLAS``); the reset-before
  GRU and the peephole / coupled LSTMs have none (``recurrence=pallas`` refuses them, ``auto`` picks fused_vjp or
  scan).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lstm_jax.cells import lstm
from lstm_jax.cells.lstm import NUM_GATES, LSTMCarry
from lstm_jax.kernels import layout as layout_lib
from lstm_jax.kernels import lstm_persistent
from lstm_jax.kernels import tiles
from lstm_jax.kernels.layout import BACKENDS

# ----------------------------------------------------------------------------------------------------------------
# Kernels. Per program: sequence refs [Tc, bB, D], state refs [bB, Hp], weight refs [Hp, 4Hp] / [4Hp, Hp], and
# two-slot state scratches [2, bB, Hp] last.
# ----------------------------------------------------------------------------------------------------------------

KERNEL = layout_lib.Kernel(num_gates=NUM_GATES, seq_width=2 * NUM_GATES + 2, num_states=2)


def _forward_kernel(xproj_ref, w_ref, h0_ref, c0_ref, *refs, walk, cols, matmul_dtype, save):
  """``h_t, c_t`` over the chunk's steps; writes ``hs[t]`` (and ``acts[t]``, ``c_prev[t]`` when ``save``); step
  ``tg`` reads the state from slot ``tg % 2`` and writes slot ``(tg + 1) % 2``."""
  hs_ref, hT_ref, cT_ref = refs[:3]
  h_ref, c_ref = refs[-2:]
  tiles.when(walk.is_first(), lambda: tiles.copy_state(h_ref, 0, h0_ref, cols),
             lambda: tiles.copy_state(c_ref, 0, c0_ref, cols))

  def step(t, tg):
    read, write = tiles.slot(tg), tiles.slot(tg + 1)

    def tile(n, carry):
      x = [xproj_ref[t, :, cols.gate(g, n)] for g in range(NUM_GATES)]
      pre = tiles.recurrent_dots(x, h_ref, read, w_ref, range(NUM_GATES), n, cols, matmul_dtype)
      i, f, gg, o = (jnp.tanh(p) if g == 2 else tiles.sigmoid(p) for g, p in enumerate(pre))
      c_prev = c_ref[read, :, cols.h(n)]
      c = f * c_prev + i * gg
      h = o * jnp.tanh(c)
      h_ref[write, :, cols.h(n)] = h
      c_ref[write, :, cols.h(n)] = c
      hs_ref[t, :, cols.h(n)] = h
      if save:
        acts_ref, cprev_ref = refs[3:5]
        for g, a in enumerate((i, f, gg, o)):
          acts_ref[t, :, cols.gate(g, n)] = a
        cprev_ref[t, :, cols.h(n)] = c_prev
      return carry

    tiles.tile_loop(cols.num_tiles, tile, 0)

  walk.run(step)
  tiles.when(walk.is_last(), lambda: tiles.store_state(hT_ref, h_ref, walk.T % 2, cols),
             lambda: tiles.store_state(cT_ref, c_ref, walk.T % 2, cols))


def _backward_kernel(wt_ref, acts_ref, cprev_ref, dhs_ref, dhT_ref, dcT_ref, dgates_ref, dh0_ref, dc0_ref, dh_ref,
                     dc_ref, *, walk, cols, matmul_dtype):
  """Reverse walk: ``(dh, dc)`` from step tg+1 (slot ``(tg + 1) % 2``) and ``dhs[t]`` -> ``dgates[t]`` and
  ``dh_{tg-1}``, ``dc_{tg-1}`` (slot ``tg % 2``); the gradients end in slot 0."""
  tiles.when(walk.is_first(), lambda: tiles.copy_state(dh_ref, walk.T % 2, dhT_ref, cols),
             lambda: tiles.copy_state(dc_ref, walk.T % 2, dcT_ref, cols))

  def step(t, tg):
    read, write = tiles.slot(tg + 1), tiles.slot(tg)

    def gate_grads(n, carry):
      i, f, gg, o = (acts_ref[t, :, cols.gate(g, n)] for g in range(NUM_GATES))
      c_prev = cprev_ref[t, :, cols.h(n)]
      tanh_c = jnp.tanh(f * c_prev + i * gg)
      dh = dh_ref[read, :, cols.h(n)] + dhs_ref[t, :, cols.h(n)]
      dc = dc_ref[read, :, cols.h(n)] + dh * (o * (1.0 - tanh_c * tanh_c))
      grads = (dc * (gg * i * (1.0 - i)), dc * (c_prev * f * (1.0 - f)), dc * (i * (1.0 - gg * gg)),
               dh * (tanh_c * o * (1.0 - o)))
      for g in range(NUM_GATES):
        dgates_ref[t, :, cols.gate(g, n)] = grads[g]
      dc_ref[write, :, cols.h(n)] = dc * f
      return carry

    tiles.tile_loop(cols.num_tiles, gate_grads, 0)
    walk.sync()  # dgates[t] is read back by other threads of the block
    tiles.hidden_grads(dh_ref, write, [(dgates_ref, g, g) for g in range(NUM_GATES)], t, wt_ref, cols, matmul_dtype)

  walk.run(step)
  tiles.when(walk.is_last(), lambda: tiles.store_state(dh0_ref, dh_ref, 0, cols),
             lambda: tiles.store_state(dc0_ref, dc_ref, 0, cols))


# ----------------------------------------------------------------------------------------------------------------
# The pallas_calls on padded arrays (all with the members axis K), and the custom_vjp around them.
# ----------------------------------------------------------------------------------------------------------------

def _forward_call(Wp, xp, h0p, c0p, T: int, cfg: tiles.Config, lay: layout_lib.Layout, save: bool):
  """Padded ``Wp [K, Hp, 4Hp]``, ``xp [K, Tp, Bp, 4Hp]``, ``h0p/c0p [K, Bp, Hp]`` -> hs, hT, cT (+ acts, c_prev)."""
  blocks = tiles.blocks_for(cfg, xp.shape[0], lay)
  G = NUM_GATES * lay.Hp
  outs = [blocks.seq_out(lay.Hp), blocks.state_out(), blocks.state_out()]
  if save:
    outs += [blocks.seq_out(G), blocks.seq_out(lay.Hp)]
  kernel = functools.partial(_forward_kernel, save=save, **tiles.walk_settings(cfg, lay, T, reverse=False))
  in_specs = [blocks.seq(G), blocks.whole(lay.Hp, G), blocks.state(), blocks.state()]
  return tiles.call(kernel, "lstm_forward_save" if save else "lstm_forward", cfg, blocks, (xp, Wp, h0p, c0p),
                    in_specs, outs, num_states=2)


def _backward_call(WTp, acts, cprev, dhsp, dhTp, dcTp, T: int, cfg: tiles.Config, lay: layout_lib.Layout):
  """``WTp [K, 4Hp, Hp]``, saved ``acts [K, Tp, Bp, 4Hp]``, ``c_prev``, ``dhs [K, Tp, Bp, Hp]``, ``dhT/dcT`` ->
  ``dgates [K, Tp, Bp, 4Hp]``, ``dh0``, ``dc0 [K, Bp, Hp]``."""
  blocks = tiles.blocks_for(cfg, acts.shape[0], lay, reverse=True)
  G = NUM_GATES * lay.Hp
  kernel = functools.partial(_backward_kernel, **tiles.walk_settings(cfg, lay, T, reverse=True))
  in_specs = [blocks.whole(G, lay.Hp), blocks.seq(G), blocks.seq(lay.Hp), blocks.seq(lay.Hp), blocks.state(),
              blocks.state()]
  return tiles.call(kernel, "lstm_backward", cfg, blocks, (WTp, acts, cprev, dhsp, dhTp, dcTp), in_specs,
                    [blocks.seq_out(G), blocks.state_out(), blocks.state_out()], num_states=2)


def _forward(cfg: tiles.Config, W_h, xproj, h0, c0, save: bool):
  """``((hT, cT, hs), residuals)``; residuals (``save``): the inputs, ``hs`` and the padded ``acts``, ``c_prev``."""
  K, T, B, H = tiles.check_shapes(W_h, xproj, NUM_GATES)
  lay = layout_lib.layout(cfg.backend, KERNEL, T, B, H, cfg.matmul_dtype)
  outs = _forward_call(tiles.pad_weights(W_h, H, lay, cfg.matmul_dtype, NUM_GATES),
                       tiles.pad_gates(xproj, B, H, lay, NUM_GATES), tiles.pad_state(h0, B, H, lay),
                       tiles.pad_state(c0, B, H, lay), T, cfg, lay, save)
  hs = tiles.unpad_state(outs[0], B, H, xproj.dtype, T)
  hT, cT = tiles.unpad_state(outs[1], B, H, h0.dtype), tiles.unpad_state(outs[2], B, H, c0.dtype)
  return (hT, cT, hs), ((W_h, xproj, h0, c0, hs, *outs[3:]) if save else None)


def _backward(cfg: tiles.Config, saved, cotangents):
  W_h, xproj, h0, c0, hs, acts, cprev = saved
  dhT, dcT, dhs = cotangents
  K, T, B, H = tiles.check_shapes(W_h, xproj, NUM_GATES)
  lay = layout_lib.layout(cfg.backend, KERNEL, T, B, H, cfg.matmul_dtype)
  WTp = jnp.swapaxes(tiles.pad_weights(W_h, H, lay, cfg.matmul_dtype, NUM_GATES), 1, 2)
  pad = lambda x: tiles.pad_state(x, B, H, lay)
  dgates_p, dh0_p, dc0_p = _backward_call(WTp, acts, cprev, pad(dhs), pad(dhT), pad(dcT), T, cfg, lay)
  dgates = tiles.unpad_gates(dgates_p, T, B, H, lay, NUM_GATES)
  dW_h = tiles.weight_grad(tiles.previous_states(h0, hs), dgates)
  return (dW_h.astype(W_h.dtype), dgates.astype(xproj.dtype), tiles.unpad_state(dh0_p, B, H, h0.dtype),
          tiles.unpad_state(dc0_p, B, H, c0.dtype))


_pallas = tiles.kernel_vjp(_forward, _backward)  # (cfg, W_h, xproj, h0, c0) -> (hT, cT, hs)


def population_recurrence(params, xproj_KTBG: jax.Array, carry: LSTMCarry, unroll: int = 1, *,
                          matmul_dtype=jnp.float32, interpret=None, backend=None) -> tuple[LSTMCarry, jax.Array]:
  """K independent members in ONE pallas_call (K is a grid axis): ``W_h [K, H, 4H]``, ``xproj [K, T, B, 4H]``,
  carry ``[K, B, H]`` -> ``(final carry [K, B, H], hs [K, T, B, H])``."""
  del unroll
  cfg = tiles.resolve(matmul_dtype, interpret, backend)
  h, c = carry
  hT, cT, hs = _pallas(cfg, params["W_h"], xproj_KTBG, h, c)
  return LSTMCarry(h=hT, c=cT), hs


def recurrence(params, xproj_TBG: jax.Array, carry: LSTMCarry, unroll: int = 1, *, matmul_dtype=jnp.float32,
               interpret=None, backend=None) -> tuple[LSTMCarry, jax.Array]:
  """Runs the recurrence over projected inputs ``[T, B, 4H]``; returns ``(final carry, hs [T, B, H])``.

  Equal to ``lstm_fused_vjp.recurrence`` (outputs and gradients). ``W_h`` with a leading members axis
  (``[K, H, 4H]``) dispatches to ``population_recurrence``. Compiled for a GPU, one member inside the persistent
  kernel's envelope runs ``lstm_jax.kernels.lstm_persistent`` (``W_h`` split over the SMs). ``matmul_dtype``: float32 or bfloat16 dot operands
  (float32 accumulation and state); ``interpret``: None = interpret on CPU; ``backend``: "triton" or "tpu"
  (None = from ``jax.default_backend()``).
  """
  cfg = tiles.resolve(matmul_dtype, interpret, backend)
  if cfg.backend == "triton" and not cfg.interpret and params["W_h"].ndim == 2 and persistent_plan(
      xproj_TBG.shape[0], xproj_TBG.shape[1], params["W_h"].shape[0], cfg.matmul_dtype) is not None:
    return lstm_persistent.recurrence(params, xproj_TBG, carry, unroll, matmul_dtype=matmul_dtype, interpret=False)
  return tiles.on_members(population_recurrence, ("W_h",), params, xproj_TBG, carry, unroll,
                          matmul_dtype=matmul_dtype, interpret=interpret, backend=backend)


def persistent_plan(T: int, B: int, H: int, matmul_dtype="float32"):
  """The persistent GPU kernel's plan for one member's ``[T, B, H]`` (``lstm_jax.kernels.lstm_persistent``), or
  None where the batch-blocked kernels run instead."""
  return lstm_persistent.plan(T, B, H, matmul_dtype)


def layer(params, xs_TBI: jax.Array, carry: LSTMCarry | None = None, unroll: int = 1,
          **kwargs) -> tuple[LSTMCarry, jax.Array]:
  """A whole LSTM layer over ``[T, B, in]``: the hoisted input projection, then the Pallas recurrence."""
  return tiles.run_layer(lstm, recurrence, params, xs_TBI, carry, unroll, **kwargs)


__all__ = ["recurrence", "population_recurrence", "layer", "KERNEL", "BACKENDS"]
