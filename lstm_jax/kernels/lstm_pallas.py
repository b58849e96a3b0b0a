"""The LSTM recurrence as two Pallas kernels (forward, reverse, each over time chunks) behind a ``custom_vjp``.

Same contract as ``lstm_jax.cells.lstm_fused_vjp.recurrence``: parameters ``{"W_h": [H, 4H], ...}`` (gate order
i, f, g, o), projected inputs ``xproj [T, B, 4H]`` (time-major, bias included), carry ``LSTMCarry(h, c)``
``[B, H]``; returns ``(final carry, hs [T, B, H])`` and the gradients w.r.t. ``W_h``, ``xproj`` and the carry. A
leading members axis (``W_h [K, H, 4H]``, ``xproj [K, T, B, 4H]``, carry ``[K, B, H]``, see
``population_recurrence``) runs as the same single ``pallas_call`` with K as a grid axis. Layout, grid, tiles and
backends: ``lstm_jax.kernels.tiles``.

What the kernels compute
------------------------
- Forward: ``h`` and ``c`` in two two-slot state scratches. Per step and hidden tile: the four gate
  pre-activations ``xproj + h @ W_h`` (four dots per tile pair) and the fused gate update (``sigmoid(x) =
  tanh(x/2)/2 + 1/2``, as lstm_fused_vjp), writing ``hs[t]`` and, when differentiated, the activated gates
  ``acts [T, B, 4H]`` and the previous cell ``c_prev [T, B, H]`` (the backward recomputes ``c = f*c_prev + i*g``
  and ``tanh(c)`` from them).
- Backward: ``(dh, dc)`` in the scratches. Per step: the gate gradients tile by tile (written to ``dgates
  [T, B, 4H]``, which is also the gradient of ``xproj``), then ``dh_{t-1} = dgates @ W_h^T``; it ends with
  ``(dh0, dc0)``; ``dW_h = h_prev^T @ dgates`` follows as one XLA matmul, as in lstm_fused_vjp.

Padded units
------------
Zero weights (rows and columns) and zero inputs, so their pre-activation is 0, ``g = tanh(0) = 0``, ``c_pad``
stays exactly 0 and ``h_pad = sigmoid(0)*tanh(0) = 0``: they never leak into real units.

Known limits
------------
- GPU: one member inside ``lstm_persistent``'s envelope (batch up to 128, hidden units over at most half the SMs)
  runs the persistent kernel instead of these. Here every batch-block program re-reads all of ``W_h`` every step,
  and the programs are only ``K * Bp / 16`` thread blocks: 2 for W1 (batch 32), 8 for W4 (batch 128), 32 for a
  population of 16 W1 members, against an H100's 132 SMs (populations and batches over 128 rows).
- TPU: ``W_h`` (``16 Hp^2`` bytes float32) must fit in VMEM (``lstm_jax.kernels.envelope``); outside the envelope
  ``recurrence=auto`` uses fused_vjp.
- Cells: kernels exist for the LSTM, the tanh RNN and the reset-after GRU (``model.PALLAS``); the reset-before
  GRU and the peephole / coupled LSTMs have none (``recurrence=pallas`` refuses them, ``auto`` picks fused_vjp or
  scan).
- ``unroll`` is accepted for the contract and ignored. Reverse mode only (custom_vjp).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lstm_jax.cells.lstm import NUM_GATES, LSTMCarry
from lstm_jax.kernels import layout as layout_lib
from lstm_jax.kernels import lstm_persistent
from lstm_jax.kernels import tiles

I, F, G, O = range(NUM_GATES)  # gate blocks of W_h and xproj (input, forget, candidate, output)
NUM_STATES = 2  # h and c
# The widest kernel's sequence blocks, in units of Hp columns: the backward reads acts, c_prev and dhs and writes
# dgates.
SEQ_WIDTH = NUM_GATES + 1 + 1 + NUM_GATES
KERNEL = layout_lib.Kernel(num_gates=NUM_GATES, seq_width=SEQ_WIDTH, num_states=NUM_STATES)

# ----------------------------------------------------------------------------------------------------------------
# Kernels. Per program: sequence refs [Tc, bB, D], state refs [bB, Hp], weight refs [Hp, 4Hp] / [4Hp, Hp], and
# two-slot state scratches [2, bB, Hp] last.
# ----------------------------------------------------------------------------------------------------------------


def _forward_kernel(xproj_ref, w_ref, h0_ref, c0_ref, hs_ref, hT_ref, cT_ref, *refs, walk, cols, matmul_dtype,
                    save):
  """``h_t, c_t`` over the chunk's steps; writes ``hs[t]`` (and ``acts[t]``, ``c_prev[t]`` when ``save``); step
  ``tg`` reads the state from slot ``tg % 2`` and writes slot ``(tg + 1) % 2``."""
  acts_ref, cprev_ref, h_ref, c_ref = refs if save else (None, None, *refs)
  tiles.when(walk.is_first(), lambda: tiles.copy_state(h_ref, 0, h0_ref, cols),
             lambda: tiles.copy_state(c_ref, 0, c0_ref, cols))

  def step(t, tg):
    read, write = tiles.slot(tg), tiles.slot(tg + 1)

    def tile(n, carry):
      x = [xproj_ref[t, :, cols.gate(g, n)] for g in (I, F, G, O)]
      pre = tiles.recurrent_dots(x, h_ref, read, w_ref, (I, F, G, O), n, cols, matmul_dtype)
      i, f, g, o = (jnp.tanh(p) if gate == G else tiles.sigmoid(p) for gate, p in zip((I, F, G, O), pre))
      c_prev = c_ref[read, :, cols.h(n)]
      c = f * c_prev + i * g
      h = o * jnp.tanh(c)
      h_ref[write, :, cols.h(n)] = h
      c_ref[write, :, cols.h(n)] = c
      hs_ref[t, :, cols.h(n)] = h
      if save:
        for gate, a in ((I, i), (F, f), (G, g), (O, o)):
          acts_ref[t, :, cols.gate(gate, n)] = a
        cprev_ref[t, :, cols.h(n)] = c_prev
      return carry

    tiles.tile_loop(cols.num_tiles, tile, 0)

  walk.run(step)
  tiles.when(walk.is_last(), lambda: tiles.store_state(hT_ref, h_ref, tiles.slot(walk.T), cols),
             lambda: tiles.store_state(cT_ref, c_ref, tiles.slot(walk.T), cols))


def _backward_kernel(wt_ref, acts_ref, cprev_ref, dhs_ref, dhT_ref, dcT_ref, dgates_ref, dh0_ref, dc0_ref, dh_ref,
                     dc_ref, *, walk, cols, matmul_dtype):
  """Reverse walk: ``(dh, dc)`` from step tg+1 (slot ``(tg + 1) % 2``) and ``dhs[t]`` -> ``dgates[t]`` and
  ``dh_{tg-1}``, ``dc_{tg-1}`` (slot ``tg % 2``); the gradients end in slot 0."""
  tiles.when(walk.is_first(), lambda: tiles.copy_state(dh_ref, tiles.slot(walk.T), dhT_ref, cols),
             lambda: tiles.copy_state(dc_ref, tiles.slot(walk.T), dcT_ref, cols))

  def step(t, tg):
    read, write = tiles.slot(tg + 1), tiles.slot(tg)

    def tile_grads(n, carry):
      i, f, g, o = (acts_ref[t, :, cols.gate(gate, n)] for gate in (I, F, G, O))
      c_prev = cprev_ref[t, :, cols.h(n)]
      tanh_c = jnp.tanh(f * c_prev + i * g)
      dh = dh_ref[read, :, cols.h(n)] + dhs_ref[t, :, cols.h(n)]
      dc = dc_ref[read, :, cols.h(n)] + dh * (o * (1.0 - tanh_c * tanh_c))
      grads = ((I, dc * (g * i * (1.0 - i))), (F, dc * (c_prev * f * (1.0 - f))), (G, dc * (i * (1.0 - g * g))),
               (O, dh * (tanh_c * o * (1.0 - o))))
      for gate, d in grads:
        dgates_ref[t, :, cols.gate(gate, n)] = d
      dc_ref[write, :, cols.h(n)] = dc * f
      return carry

    tiles.tile_loop(cols.num_tiles, tile_grads, 0)
    walk.sync()  # dgates[t] is read back by other threads of the block
    tiles.hidden_grads(dh_ref, write, [(dgates_ref, gate, gate) for gate in (I, F, G, O)], t, wt_ref, cols,
                       matmul_dtype)

  walk.run(step)
  tiles.when(walk.is_last(), lambda: tiles.store_state(dh0_ref, dh_ref, 0, cols),
             lambda: tiles.store_state(dc0_ref, dc_ref, 0, cols))


# ----------------------------------------------------------------------------------------------------------------
# The pallas_calls on padded arrays (all with the members axis K), and the custom_vjp around them.
# ----------------------------------------------------------------------------------------------------------------

def _forward_call(Wp, xp, h0p, c0p, T: int, cfg: tiles.Config, lay: layout_lib.Layout, save: bool):
  """Padded ``Wp [K, Hp, 4Hp]``, ``xp [K, Tp, Bp, 4Hp]``, ``h0p/c0p [K, Bp, Hp]`` -> hs, hT, cT (+ acts, c_prev)."""
  blocks = tiles.blocks_for(cfg, xp.shape[0], lay)
  width = NUM_GATES * lay.Hp
  outs = [blocks.seq_out(lay.Hp), blocks.state_out(), blocks.state_out()]
  if save:
    outs += [blocks.seq_out(width), blocks.seq_out(lay.Hp)]
  kernel = functools.partial(_forward_kernel, save=save, **tiles.walk_settings(cfg, lay, T, reverse=False))
  in_specs = [blocks.seq(width), blocks.whole(lay.Hp, width), blocks.state(), blocks.state()]
  return tiles.call(kernel, "lstm_forward_save" if save else "lstm_forward", cfg, blocks, (xp, Wp, h0p, c0p),
                    in_specs, outs, num_states=NUM_STATES)


def _backward_call(WTp, acts, cprev, dhsp, dhTp, dcTp, T: int, cfg: tiles.Config, lay: layout_lib.Layout):
  """``WTp [K, 4Hp, Hp]``, saved ``acts [K, Tp, Bp, 4Hp]``, ``c_prev``, ``dhs [K, Tp, Bp, Hp]``, ``dhT/dcT`` ->
  ``dgates [K, Tp, Bp, 4Hp]``, ``dh0``, ``dc0 [K, Bp, Hp]``."""
  blocks = tiles.blocks_for(cfg, acts.shape[0], lay, reverse=True)
  width = NUM_GATES * lay.Hp
  kernel = functools.partial(_backward_kernel, **tiles.walk_settings(cfg, lay, T, reverse=True))
  in_specs = [blocks.whole(width, lay.Hp), blocks.seq(width), blocks.seq(lay.Hp), blocks.seq(lay.Hp), blocks.state(),
              blocks.state()]
  return tiles.call(kernel, "lstm_backward", cfg, blocks, (WTp, acts, cprev, dhsp, dhTp, dcTp), in_specs,
                    [blocks.seq_out(width), blocks.state_out(), blocks.state_out()], num_states=NUM_STATES)


def _forward(cfg: tiles.Config, W_h, xproj, h0, c0, save: bool):
  """``((hT, cT, hs), residuals)``; residuals (``save``): the inputs, ``hs`` and the padded ``acts``, ``c_prev``."""
  K, T, B, H = tiles.check_shapes(W_h, xproj, NUM_GATES)
  lay = layout_lib.layout(cfg.backend, KERNEL, T, B, H, cfg.matmul_dtype)
  outs = _forward_call(tiles.pad_weights(W_h, H, lay, cfg.matmul_dtype, NUM_GATES),
                       tiles.pad_gates(xproj, B, H, lay, NUM_GATES), tiles.pad_state(h0, B, H, lay),
                       tiles.pad_state(c0, B, H, lay), T, cfg, lay, save)
  hs_p, hT_p, cT_p, *saved = outs
  hs = tiles.unpad_state(hs_p, B, H, xproj.dtype, T)
  hT, cT = tiles.unpad_state(hT_p, B, H, h0.dtype), tiles.unpad_state(cT_p, B, H, c0.dtype)
  return (hT, cT, hs), ((W_h, xproj, h0, c0, hs, *saved) if save else None)


def _backward(cfg: tiles.Config, residuals, cotangents):
  W_h, xproj, h0, c0, hs, acts, cprev = residuals
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
  kernel's envelope runs ``lstm_jax.kernels.lstm_persistent`` (``W_h`` split over the SMs). ``matmul_dtype``:
  float32 or bfloat16 dot operands (float32 accumulation and state); ``interpret``: None = interpret on CPU;
  ``backend``: "triton" or "tpu" (None = from ``jax.default_backend()``).
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


__all__ = ["recurrence", "population_recurrence", "persistent_plan", "KERNEL"]
