"""The tanh RNN recurrence as two Pallas kernels (forward, reverse, each over time chunks) behind a ``custom_vjp``.

Same contract as ``lstm_jax.cells.rnn_fused_vjp.recurrence`` (and ``rnn.recurrence``): parameters
``{"W_h": [H, H], ...}``, projected inputs ``xproj [T, B, H]`` (time-major, bias included), carry ``h [B, H]``;
returns ``(final h [B, H], hs [T, B, H])`` and the gradients w.r.t. ``W_h``, ``xproj`` and ``h0``. A leading
members axis (``W_h [K, H, H]``, ``xproj [K, T, B, H]``, ``h0 [K, B, H]``, see ``population_recurrence``) runs as
the same single ``pallas_call`` with K as a grid axis. Layout, grid, tiles and backends: ``lstm_jax.kernels.tiles``
(G = 1 gate block: ``W_h [Hp, Hp]``, ``xproj``/``hs``/``dz`` ``[T, Bp, Hp]``).

What the kernels compute
------------------------
- Forward: ``h`` in the two-slot state scratch, ``h_t = tanh(xproj_t + h_{t-1} W_h)`` (one dot per tile pair),
  writing ``hs[t]``. ``hs`` is all the backward needs (``tanh' = 1 - h^2``), so the differentiated forward is the
  same kernel and saves nothing more.
- Backward: ``dh`` in the scratch. Per step: ``dz_t = (dh_t + dhs_t) * (1 - h_t^2)`` tile by tile (written out:
  it is the gradient of ``xproj``), then ``dh_{t-1} = dz_t W_h^T``; it ends with ``dh0``; ``dW_h = h_prev^T @ dz``
  follows as one XLA matmul.

Padded units
------------
Zero weights and zero inputs, so their state is ``tanh(0) = 0`` at every step, and their gradients are zero.

Known limits
------------
Those of ``lstm_pallas`` (``W_h`` re-read every step on GPU; on TPU ``W_h``, ``4 Hp^2`` bytes float32, must fit in
VMEM: ``lstm_jax.kernels.envelope``). ``unroll`` is accepted for the contract and ignored. Reverse mode only
(custom_vjp).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lstm_jax.cells.rnn import NUM_GATES
from lstm_jax.kernels import layout as layout_lib
from lstm_jax.kernels import tiles

(Z,) = range(NUM_GATES)  # the one gate block of W_h and xproj: the pre-activation
NUM_STATES = 1  # h
# The widest kernel's sequence blocks, in units of Hp columns: the backward reads hs and dhs and writes dz.
SEQ_WIDTH = 1 + 1 + NUM_GATES
KERNEL = layout_lib.Kernel(num_gates=NUM_GATES, seq_width=SEQ_WIDTH, num_states=NUM_STATES)

# ----------------------------------------------------------------------------------------------------------------
# Kernels. Per program: sequence refs [Tc, bB, Hp], state refs [bB, Hp], weight refs [Hp, Hp], and a two-slot
# state scratch [2, bB, Hp] last.
# ----------------------------------------------------------------------------------------------------------------



def _forward_kernel(xproj_ref, w_ref, h0_ref, hs_ref, hT_ref, h_ref, *, walk, cols, matmul_dtype):
  """``h_t = tanh(xproj_t + h_{t-1} W_h)`` over the chunk's steps; writes ``hs[t]``; step ``tg`` reads ``h`` from
  slot ``tg % 2`` and writes slot ``(tg + 1) % 2``."""
  tiles.when(walk.is_first(), lambda: tiles.copy_state(h_ref, 0, h0_ref, cols))

  def step(t, tg):
    read, write = tiles.slot(tg), tiles.slot(tg + 1)

    def tile(n, carry):
      (pre,) = tiles.recurrent_dots((xproj_ref[t, :, cols.gate(Z, n)],), h_ref, read, w_ref, (Z,), n, cols,
                                     matmul_dtype)
      h = jnp.tanh(pre)
      h_ref[write, :, cols.h(n)] = h
      hs_ref[t, :, cols.h(n)] = h
      return carry

    tiles.tile_loop(cols.num_tiles, tile, 0)

  walk.run(step)
  tiles.when(walk.is_last(), lambda: tiles.store_state(hT_ref, h_ref, tiles.slot(walk.T), cols))


def _backward_kernel(wt_ref, hs_ref, dhs_ref, dhT_ref, dz_ref, dh0_ref, dh_ref, *, walk, cols, matmul_dtype):
  """Reverse walk: ``dh`` from step tg+1 (slot ``(tg + 1) % 2``) and ``dhs[t]`` -> ``dz[t]``, ``dh_{tg-1} =
  dz[t] W_h^T`` (slot ``tg % 2``); ``dh0`` ends in slot 0."""
  tiles.when(walk.is_first(), lambda: tiles.copy_state(dh_ref, tiles.slot(walk.T), dhT_ref, cols))

  def step(t, tg):
    read, write = tiles.slot(tg + 1), tiles.slot(tg)

    def tile_grads(n, carry):
      h = hs_ref[t, :, cols.h(n)]
      dz_ref[t, :, cols.gate(Z, n)] = (dh_ref[read, :, cols.h(n)] + dhs_ref[t, :, cols.h(n)]) * (1.0 - h * h)
      return carry

    tiles.tile_loop(cols.num_tiles, tile_grads, 0)
    walk.sync()  # dz[t] is read back by other threads of the block
    tiles.hidden_grads(dh_ref, write, [(dz_ref, Z, Z)], t, wt_ref, cols, matmul_dtype)

  walk.run(step)
  tiles.when(walk.is_last(), lambda: tiles.store_state(dh0_ref, dh_ref, 0, cols))


# ----------------------------------------------------------------------------------------------------------------
# The pallas_calls on padded arrays (all with the members axis K), and the custom_vjp around them.
# ----------------------------------------------------------------------------------------------------------------

def _forward_call(Wp, xp, h0p, T: int, cfg: tiles.Config, lay: layout_lib.Layout):
  """Padded ``Wp [K, Hp, Hp]``, ``xp [K, Tp, Bp, Hp]``, ``h0p [K, Bp, Hp]`` -> ``hs [K, Tp, Bp, Hp]``, ``hT``."""
  blocks = tiles.blocks_for(cfg, xp.shape[0], lay)
  kernel = functools.partial(_forward_kernel, **tiles.walk_settings(cfg, lay, T, reverse=False))
  in_specs = [blocks.seq(lay.Hp), blocks.whole(lay.Hp, lay.Hp), blocks.state()]
  return tiles.call(kernel, "rnn_forward", cfg, blocks, (xp, Wp, h0p), in_specs,
                    [blocks.seq_out(lay.Hp), blocks.state_out()], num_states=NUM_STATES)


def _backward_call(WTp, hsp, dhsp, dhTp, T: int, cfg: tiles.Config, lay: layout_lib.Layout):
  """``WTp [K, Hp, Hp]``, ``hs``, ``dhs [K, Tp, Bp, Hp]``, ``dhT [K, Bp, Hp]`` -> ``dz [K, Tp, Bp, Hp]``,
  ``dh0``."""
  blocks = tiles.blocks_for(cfg, hsp.shape[0], lay, reverse=True)
  kernel = functools.partial(_backward_kernel, **tiles.walk_settings(cfg, lay, T, reverse=True))
  in_specs = [blocks.whole(lay.Hp, lay.Hp), blocks.seq(lay.Hp), blocks.seq(lay.Hp), blocks.state()]
  return tiles.call(kernel, "rnn_backward", cfg, blocks, (WTp, hsp, dhsp, dhTp), in_specs,
                    [blocks.seq_out(lay.Hp), blocks.state_out()], num_states=NUM_STATES)


def _forward(cfg: tiles.Config, W_h, xproj, h0, save: bool):
  """``((hT, hs), residuals)``; the residuals (``save``) are the inputs and ``hs``."""
  K, T, B, H = tiles.check_shapes(W_h, xproj, NUM_GATES)
  lay = layout_lib.layout(cfg.backend, KERNEL, T, B, H, cfg.matmul_dtype)
  hs_p, hT_p = _forward_call(tiles.pad_weights(W_h, H, lay, cfg.matmul_dtype, NUM_GATES),
                             tiles.pad_gates(xproj, B, H, lay, NUM_GATES), tiles.pad_state(h0, B, H, lay), T, cfg,
                             lay)
  hs, hT = tiles.unpad_state(hs_p, B, H, xproj.dtype, T), tiles.unpad_state(hT_p, B, H, h0.dtype)
  return (hT, hs), ((W_h, xproj, h0, hs) if save else None)


def _backward(cfg: tiles.Config, residuals, cotangents):
  W_h, xproj, h0, hs = residuals
  dhT, dhs = cotangents
  K, T, B, H = tiles.check_shapes(W_h, xproj, NUM_GATES)
  lay = layout_lib.layout(cfg.backend, KERNEL, T, B, H, cfg.matmul_dtype)
  WTp = jnp.swapaxes(tiles.pad_weights(W_h, H, lay, cfg.matmul_dtype, NUM_GATES), 1, 2)
  pad = lambda x: tiles.pad_state(x, B, H, lay)
  dz_p, dh0_p = _backward_call(WTp, pad(hs), pad(dhs), pad(dhT), T, cfg, lay)
  dz = tiles.unpad_state(dz_p, B, H, jnp.float32, T)
  dW_h = tiles.weight_grad(tiles.previous_states(h0, hs), dz)
  return dW_h.astype(W_h.dtype), dz.astype(xproj.dtype), tiles.unpad_state(dh0_p, B, H, h0.dtype)


_pallas = tiles.kernel_vjp(_forward, _backward)  # (cfg, W_h, xproj, h0) -> (hT, hs)


def population_recurrence(params, xproj_KTBH: jax.Array, carry: jax.Array, unroll: int = 1, *,
                          matmul_dtype=jnp.float32, interpret=None, backend=None) -> tuple[jax.Array, jax.Array]:
  """K independent members in ONE pallas_call (K is a grid axis): ``W_h [K, H, H]``, ``xproj [K, T, B, H]``,
  ``h0 [K, B, H]`` -> ``(final h [K, B, H], hs [K, T, B, H])``."""
  del unroll
  return _pallas(tiles.resolve(matmul_dtype, interpret, backend), params["W_h"], xproj_KTBH, carry)


def recurrence(params, xproj_TBH: jax.Array, carry: jax.Array, unroll: int = 1, *, matmul_dtype=jnp.float32,
               interpret=None, backend=None) -> tuple[jax.Array, jax.Array]:
  """Runs the recurrence over projected inputs ``[T, B, H]``; returns ``(final h [B, H], hs [T, B, H])``.

  Equal to ``rnn_fused_vjp.recurrence`` (outputs and gradients). ``W_h`` with a leading members axis
  (``[K, H, H]``) dispatches to ``population_recurrence``. ``matmul_dtype``: float32 or bfloat16 dot operands
  (float32 accumulation and state); ``interpret``: None = interpret on CPU; ``backend``: "triton" or "tpu"
  (None = from ``jax.default_backend()``).
  """
  return tiles.on_members(population_recurrence, ("W_h",), params, xproj_TBH, carry, unroll,
                          matmul_dtype=matmul_dtype, interpret=interpret, backend=backend)



__all__ = ["recurrence", "population_recurrence", "KERNEL"]
