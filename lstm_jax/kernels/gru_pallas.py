"""The reset-after GRU recurrence (``gru_reset_after``: cuDNN's / ``flax.linen.GRUCell``'s form) as two Pallas
kernels (forward, reverse, each over time chunks) behind a ``custom_vjp``.

Same contract as ``lstm_jax.cells.gru.reset_after.recurrence``: parameters ``{"W_h": [H, 3H], "b_hn": [H], ...}``
(gate blocks in the order r, z, n), projected inputs ``xproj [T, B, 3H]`` (time-major, the input bias ``b``
included), carry ``h [B, H]``; returns ``(final h [B, H], hs [T, B, H])`` and the gradients w.r.t. ``W_h``,
``b_hn``, ``xproj`` and ``h0``. Per step, with ``hh = h_{t-1} W_h`` (ONE ``[B, H] x [H, 3H]`` dot)::

    r = sigmoid(x_r + hh_r)    z = sigmoid(x_z + hh_z)    hn = hh_n + b_hn
    n = tanh(x_n + r * hn)     h_t = z * h_{t-1} + (1 - z) * n

A leading members axis (``W_h [K, H, 3H]``, ``b_hn [K, H]``, ``xproj [K, T, B, 3H]``, ``h0 [K, B, H]``, see
``population_recurrence``) runs as the same single ``pallas_call`` with K as a grid axis. Layout, grid, tiles and
backends: ``lstm_jax.kernels.tiles`` (G = 3 gate blocks: ``W_h [Hp, 3Hp]``, ``xproj``/``acts``/``dxproj``
``[T, Bp, 3Hp]``, ``b_hn`` as a ``[1, Hp]`` row block).

What the kernels compute
------------------------
- Forward: ``h`` in the two-slot state scratch; per step and hidden tile the three dots of ``hh`` (the n block
  kept apart from ``x_n``: ``b_hn`` sits inside the reset product) and the gate update, writing ``hs[t]``. When
  differentiated it also saves the activated gates ``acts = (r, z, n) [T, B, 3H]`` and the recurrent candidate
  term ``hn [T, B, H]`` (which needs the dot, so it is saved rather than recomputed).
- Backward: ``dh`` in the scratch. With ``a = dh + dhs_t`` and ``h_prev`` (``h0, hs[:-1]``, built in the wrapper):
  ``dpn = a (1 - z)(1 - n^2)``, ``dpz = a (h_prev - n) z (1 - z)``, ``dhn = dpn r``, ``dpr = dpn hn r (1 - r)``,
  tile by tile; it writes ``dxproj = (dpr, dpz, dpn)`` and ``dhn``, and ``dh_{t-1} = a z + (dpr, dpz, dhn)
  W_h^T`` (the direct term ``a z`` first, then the dots added to it). Then two XLA reductions over all ``T*B``
  rows: ``dW_h = h_prev^T @ (dpr, dpz, dhn)`` and ``db_hn = sum(dhn)``.

Padded units
------------
Zero weights, inputs, ``b_hn`` and initial state, so ``r = z = 1/2``, ``hn = n = 0`` and ``h_pad = h_pad / 2``
stays exactly 0; their gradients are zero.

Known limits
------------
Those of ``lstm_pallas`` (``W_h`` re-read every step on GPU; on TPU ``W_h``, ``12 Hp^2`` bytes float32, must fit
in VMEM: ``lstm_jax.kernels.envelope``). Only the reset-after form: the reset-before ``gru`` (D2L's) needs ``r``
before its second dot and has no kernel. ``unroll`` is accepted for the contract and ignored. Reverse mode only
(custom_vjp).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lstm_jax.cells.gru import NUM_GATES
from lstm_jax.kernels import layout as layout_lib
from lstm_jax.kernels import tiles

R, Z, N = range(NUM_GATES)  # gate blocks of W_h and xproj (reset, update, candidate)
NUM_STATES = 1  # h
# The widest kernel's sequence blocks, in units of Hp columns: the backward reads acts, hn, h_prev and dhs and
# writes dxproj and dhn.
SEQ_WIDTH = NUM_GATES + 1 + 1 + 1 + NUM_GATES + 1
KERNEL = layout_lib.Kernel(num_gates=NUM_GATES, seq_width=SEQ_WIDTH, num_states=NUM_STATES)

# ----------------------------------------------------------------------------------------------------------------
# Kernels. Per program: sequence refs [Tc, bB, D], state refs [bB, Hp], W_h refs [Hp, 3Hp] / [3Hp, Hp], b_hn
# [1, Hp], and a two-slot state scratch [2, bB, Hp] last.
# ----------------------------------------------------------------------------------------------------------------


def _forward_kernel(xproj_ref, w_ref, bhn_ref, h0_ref, hs_ref, hT_ref, *refs, walk, cols, matmul_dtype, save):
  """``h_t`` over the chunk's steps; writes ``hs[t]`` (and ``acts[t]``, ``hn[t]`` when ``save``); step ``tg``
  reads ``h`` from slot ``tg % 2`` and writes slot ``(tg + 1) % 2``."""
  acts_ref, hn_ref, h_ref = refs if save else (None, None, *refs)
  tiles.when(walk.is_first(), lambda: tiles.copy_state(h_ref, 0, h0_ref, cols))

  def step(t, tg):
    read, write = tiles.slot(tg), tiles.slot(tg + 1)

    def tile(n, carry):
      x = lambda g: xproj_ref[t, :, cols.gate(g, n)]
      init = (x(R), x(Z), jnp.broadcast_to(bhn_ref[:, cols.h(n)], (h_ref.shape[1], cols.bh)))
      pre_r, pre_z, hn = tiles.recurrent_dots(init, h_ref, read, w_ref, (R, Z, N), n, cols, matmul_dtype)
      r, z = tiles.sigmoid(pre_r), tiles.sigmoid(pre_z)
      cand = jnp.tanh(x(N) + r * hn)
      h = z * h_ref[read, :, cols.h(n)] + (1.0 - z) * cand
      h_ref[write, :, cols.h(n)] = h
      hs_ref[t, :, cols.h(n)] = h
      if save:
        for g, a in ((R, r), (Z, z), (N, cand)):
          acts_ref[t, :, cols.gate(g, n)] = a
        hn_ref[t, :, cols.h(n)] = hn
      return carry

    tiles.tile_loop(cols.num_tiles, tile, 0)

  walk.run(step)
  tiles.when(walk.is_last(), lambda: tiles.store_state(hT_ref, h_ref, tiles.slot(walk.T), cols))


def _backward_kernel(wt_ref, acts_ref, hn_ref, hprev_ref, dhs_ref, dhT_ref, dxproj_ref, dhn_ref, dh0_ref, dh_ref, *,
                     walk, cols, matmul_dtype):
  """Reverse walk: ``dh`` from step tg+1 (slot ``(tg + 1) % 2``) and ``dhs[t]`` -> ``dxproj[t]``, ``dhn[t]`` and
  ``dh_{tg-1}`` (slot ``tg % 2``: first the direct term ``a z``, then the dots added to it); ``dh0`` ends in
  slot 0."""
  tiles.when(walk.is_first(), lambda: tiles.copy_state(dh_ref, tiles.slot(walk.T), dhT_ref, cols))

  def step(t, tg):
    read, write = tiles.slot(tg + 1), tiles.slot(tg)

    def tile_grads(n, carry):
      r, z, cand = (acts_ref[t, :, cols.gate(g, n)] for g in (R, Z, N))
      a = dh_ref[read, :, cols.h(n)] + dhs_ref[t, :, cols.h(n)]
      dpn = a * (1.0 - z) * (1.0 - cand * cand)
      dpz = a * (hprev_ref[t, :, cols.h(n)] - cand) * (z * (1.0 - z))
      dhn = dpn * r
      dpr = dpn * hn_ref[t, :, cols.h(n)] * (r * (1.0 - r))
      for g, d in ((R, dpr), (Z, dpz), (N, dpn)):
        dxproj_ref[t, :, cols.gate(g, n)] = d
      dhn_ref[t, :, cols.h(n)] = dhn
      dh_ref[write, :, cols.h(n)] = a * z
      return carry

    tiles.tile_loop(cols.num_tiles, tile_grads, 0)
    walk.sync()  # dxproj[t], dhn[t] and the direct term are read back by other threads of the block
    # (ref, gate block in the ref, gate block of W_h): dhn has one block, the n block's gradient through W_h
    tiles.hidden_grads(dh_ref, write, [(dxproj_ref, R, R), (dxproj_ref, Z, Z), (dhn_ref, 0, N)], t, wt_ref, cols,
                       matmul_dtype, add=True)

  walk.run(step)
  tiles.when(walk.is_last(), lambda: tiles.store_state(dh0_ref, dh_ref, 0, cols))


# ----------------------------------------------------------------------------------------------------------------
# The pallas_calls on padded arrays (all with the members axis K), and the custom_vjp around them.
# ----------------------------------------------------------------------------------------------------------------

def _forward_call(Wp, bp, xp, h0p, T: int, cfg: tiles.Config, lay: layout_lib.Layout, save: bool):
  """Padded ``Wp [K, Hp, 3Hp]``, ``bp [K, 1, Hp]``, ``xp [K, Tp, Bp, 3Hp]``, ``h0p [K, Bp, Hp]`` -> ``hs``, ``hT``
  (+ ``acts [K, Tp, Bp, 3Hp]``, ``hn [K, Tp, Bp, Hp]``)."""
  blocks = tiles.blocks_for(cfg, xp.shape[0], lay)
  width = NUM_GATES * lay.Hp
  outs = [blocks.seq_out(lay.Hp), blocks.state_out()]
  if save:
    outs += [blocks.seq_out(width), blocks.seq_out(lay.Hp)]
  kernel = functools.partial(_forward_kernel, save=save, **tiles.walk_settings(cfg, lay, T, reverse=False))
  in_specs = [blocks.seq(width), blocks.whole(lay.Hp, width), blocks.whole(1, lay.Hp), blocks.state()]
  return tiles.call(kernel, "gru_forward_save" if save else "gru_forward", cfg, blocks, (xp, Wp, bp, h0p),
                    in_specs, outs, num_states=NUM_STATES)


def _backward_call(WTp, acts, hn, hprev, dhsp, dhTp, T: int, cfg: tiles.Config, lay: layout_lib.Layout):
  """``WTp [K, 3Hp, Hp]``, saved ``acts [K, Tp, Bp, 3Hp]``, ``hn``, ``h_prev``, ``dhs [K, Tp, Bp, Hp]``, ``dhT`` ->
  ``dxproj [K, Tp, Bp, 3Hp]``, ``dhn [K, Tp, Bp, Hp]``, ``dh0 [K, Bp, Hp]``."""
  blocks = tiles.blocks_for(cfg, acts.shape[0], lay, reverse=True)
  width = NUM_GATES * lay.Hp
  kernel = functools.partial(_backward_kernel, **tiles.walk_settings(cfg, lay, T, reverse=True))
  in_specs = [blocks.whole(width, lay.Hp), blocks.seq(width)] + [blocks.seq(lay.Hp)] * 3 + [blocks.state()]
  return tiles.call(kernel, "gru_backward", cfg, blocks, (WTp, acts, hn, hprev, dhsp, dhTp), in_specs,
                    [blocks.seq_out(width), blocks.seq_out(lay.Hp), blocks.state_out()], num_states=NUM_STATES)


def _forward(cfg: tiles.Config, W_h, b_hn, xproj, h0, save: bool):
  """``((hT, hs), residuals)``; residuals (``save``): the inputs, ``hs`` and the padded ``acts``, ``hn``."""
  K, T, B, H = tiles.check_shapes(W_h, xproj, NUM_GATES)
  lay = layout_lib.layout(cfg.backend, KERNEL, T, B, H, cfg.matmul_dtype)
  outs = _forward_call(tiles.pad_weights(W_h, H, lay, cfg.matmul_dtype, NUM_GATES), tiles.pad_row(b_hn, H, lay),
                       tiles.pad_gates(xproj, B, H, lay, NUM_GATES), tiles.pad_state(h0, B, H, lay), T, cfg, lay,
                       save)
  hs_p, hT_p, *saved = outs
  hs, hT = tiles.unpad_state(hs_p, B, H, xproj.dtype, T), tiles.unpad_state(hT_p, B, H, h0.dtype)
  return (hT, hs), ((W_h, b_hn, xproj, h0, hs, *saved) if save else None)


def _backward(cfg: tiles.Config, residuals, cotangents):
  W_h, b_hn, xproj, h0, hs, acts, hn = residuals
  dhT, dhs = cotangents
  K, T, B, H = tiles.check_shapes(W_h, xproj, NUM_GATES)
  lay = layout_lib.layout(cfg.backend, KERNEL, T, B, H, cfg.matmul_dtype)
  WTp = jnp.swapaxes(tiles.pad_weights(W_h, H, lay, cfg.matmul_dtype, NUM_GATES), 1, 2)
  h_prev = tiles.previous_states(h0, hs)
  pad = lambda x: tiles.pad_state(x, B, H, lay)
  dx_p, dhn_p, dh0_p = _backward_call(WTp, acts, hn, pad(h_prev), pad(dhs), pad(dhT), T, cfg, lay)
  dxproj = tiles.unpad_gates(dx_p, T, B, H, lay, NUM_GATES)
  dhn = tiles.unpad_state(dhn_p, B, H, jnp.float32, T)
  dW_h = tiles.weight_grad(h_prev, jnp.concatenate([dxproj[..., :N * H], dhn], axis=-1))  # (dpr, dpz, dhn)
  return (dW_h.astype(W_h.dtype), jnp.sum(dhn, axis=(1, 2)).astype(b_hn.dtype), dxproj.astype(xproj.dtype),
          tiles.unpad_state(dh0_p, B, H, h0.dtype))


_pallas = tiles.kernel_vjp(_forward, _backward)  # (cfg, W_h, b_hn, xproj, h0) -> (hT, hs)


def population_recurrence(params, xproj_KTBG: jax.Array, carry: jax.Array, unroll: int = 1, *,
                          matmul_dtype=jnp.float32, interpret=None, backend=None) -> tuple[jax.Array, jax.Array]:
  """K independent members in ONE pallas_call (K is a grid axis): ``W_h [K, H, 3H]``, ``b_hn [K, H]``,
  ``xproj [K, T, B, 3H]``, ``h0 [K, B, H]`` -> ``(final h [K, B, H], hs [K, T, B, H])``."""
  del unroll
  cfg = tiles.resolve(matmul_dtype, interpret, backend)
  return _pallas(cfg, params["W_h"], params["b_hn"], xproj_KTBG, carry)


def recurrence(params, xproj_TBG: jax.Array, carry: jax.Array, unroll: int = 1, *, matmul_dtype=jnp.float32,
               interpret=None, backend=None) -> tuple[jax.Array, jax.Array]:
  """Runs the recurrence over projected inputs ``[T, B, 3H]``; returns ``(final h [B, H], hs [T, B, H])``.

  Equal to ``gru.reset_after.recurrence`` (outputs and gradients). ``W_h`` with a leading members axis
  (``[K, H, 3H]``, ``b_hn [K, H]``) dispatches to ``population_recurrence``. ``matmul_dtype``: float32 or bfloat16
  dot operands (float32 accumulation, state and ``b_hn``); ``interpret``: None = interpret on CPU; ``backend``:
  "triton" or "tpu" (None = from ``jax.default_backend()``).
  """
  return tiles.on_members(population_recurrence, ("W_h", "b_hn"), params, xproj_TBG, carry, unroll,
                          matmul_dtype=matmul_dtype, interpret=interpret, backend=backend)



__all__ = ["recurrence", "population_recurrence", "KERNEL"]
