"""The reset-after GRU recurrence (``gru_reset_after``: cuDNN's / ``flax.linen.GRUCell``'s form) as two Pallas
kernels (whole-sequence forward, whole-sequence reverse) behind a ``custom_vjp``.

Same contract as ``lstm_jax.cells.gru.reset_after.recurrence``: parameters ``{"W_h": [H, 3H], "b_hn": [H], ...}``
(gate blocks in the order r, z, n), projected inputs ``xproj [T, B, 3H]`` (time-major, the input bias ``b``
included), carry ``h [B, H]``; returns ``(final h [B, H], hs [T, B, H])`` and the gradients w.r.t. ``W_h``,
``b_hn``, ``xproj`` and ``h0``. Per step, with ``hh = h_{t-1} W_h`` (ONE ``[B, H] x [H, 3H]`` dot)::

    r = sigmoid(x_r + hh_r)    z = sigmoid(x_z + hh_z)    hn = hh_n + b_hn
    n = tanh(x_n + r * hn)     h_t = z * h_{t-1} + (1 - z) * n

A leading members axis (``W_h [K, H, 3H]``, ``b_hn [K, H]``, ``xproj [K, T, B, 3H]``, ``h0 [K, B, H]``, see
``population_recurrence``) runs as the same single ``pallas_call`` with K as a grid axis.

What the kernels compute
------------------------
- Forward: ONE ``pallas_call``, grid ``(K, Bp / bB)`` ("parallel" axes); each program walks all T steps of its
  ``bB`` batch rows with ``lax.fori_loop``, ``h`` in registers, and writes ``hs[t]``. When differentiated it also
  saves the activated gates ``acts = (r, z, n) [T, B, 3H]`` and the recurrent candidate term
  ``hn [T, B, H]`` (which needs the dot, so it is saved rather than recomputed).
- Backward: ONE reverse ``pallas_call``, carry ``dh`` in registers. With ``a = dh + dhs_t`` and ``h_prev``
  (``h0, hs[:-1]``, built in the wrapper): ``dpn = a (1 - z)(1 - n^2)``, ``dpz = a (h_prev - n) z (1 - z)``,
  ``dhn = dpn r``, ``dpr = dpn hn r (1 - r)``; it writes ``dxproj = (dpr, dpz, dpn)`` and ``dhn``, and
  ``dh_{t-1} = a z + (dpr, dpz, dhn) W_h^T`` (one dot with ``W_h^T``, transposed once in the wrapper).
  Then two XLA reductions over all ``T*B`` rows: ``dW_h = h_prev^T @ (dpr, dpz, dhn)`` and ``db_hn = sum(dhn)``.

Layout, tiles and backends: as the LSTM kernels (``lstm_jax.kernels.tiles``), with G = 3 gate blocks:
``W_h [Hp, 3Hp]``, ``xproj``/``acts``/``dxproj`` ``[T, Bp, 3Hp]``, ``b_hn`` as a ``[1, Hp]`` row block. Padded
units have zero weights, inputs, ``b_hn`` and initial state, so ``r = z = 1/2``, ``hn = n = 0`` and
``h_pad = h_pad / 2`` stays exactly 0; their gradients are zero.

Differences from the LSTM kernels: three gate blocks (``3 (Hp/bh)^2`` dots per step), one state ``h`` (no cell
``c``), a recurrent bias ``b_hn`` that sits inside the reset product (so the n block of the recurrent dot is kept
apart from ``x_n``, and ``dxproj`` differs from the recurrent-dot gradient in that block), and ``dh_{t-1}`` has
the direct term ``a z`` besides the dot.

Known limits: those of ``lstm_pallas`` (W_h re-read from L2 every step on GPU, statically unrolled tile loops;
on TPU ``W_h`` ``12 Hp^2`` bytes f32 plus the sequence blocks must fit in VMEM). Only the reset-after form: the
reset-before ``gru`` (D2L's) needs ``r`` before its second dot and has no kernel. ``unroll`` is accepted for the
contract and ignored. Reverse mode only (custom_vjp).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lstm_jax.cells import gru
from lstm_jax.cells.gru import NUM_GATES
from lstm_jax.kernels import tiles

R, Z, N = range(NUM_GATES)

# ----------------------------------------------------------------------------------------------------------------
# Kernels. Per program: seq refs [T, bB, D], state refs [bB, Hp], W_h refs [Hp, 3Hp] / [3Hp, Hp], b_hn [1, Hp].
# ----------------------------------------------------------------------------------------------------------------

def _cell(x_ref, t, hm, h_prev, w_ref, bhn_ref, n, cols):
  """Hidden tile ``n`` of one step: ``(r, z, n, hn)`` and the new ``h`` ``[bB, bh]``."""
  x = lambda g: x_ref[t, :, cols.gate(g, n)].astype(jnp.float32)
  r = tiles.sigmoid(tiles.gate_dot(x(R), hm, w_ref, R, n, cols))
  z = tiles.sigmoid(tiles.gate_dot(x(Z), hm, w_ref, Z, n, cols))
  hn = tiles.gate_dot(bhn_ref[:, cols.h(n)], hm, w_ref, N, n, cols)
  cand = jnp.tanh(x(N) + r * hn)
  return (r, z, cand, hn), z * h_prev + (1.0 - z) * cand


def _forward_kernel(xproj_ref, w_ref, bhn_ref, h0_ref, *out_refs, num_steps, cols, matmul_dtype, save):
  """``h_t`` over all T steps; writes ``hs[t]`` (and ``acts[t]``, ``hn[t]`` when ``save``)."""
  hs_ref, hT_ref = out_refs[:2]

  def step(t, h_tiles):
    hm = tuple(h.astype(matmul_dtype) for h in h_tiles)
    new_h = []
    for n in range(cols.num_tiles):
      acts, h = _cell(xproj_ref, t, hm, h_tiles[n], w_ref, bhn_ref, n, cols)
      hs_ref[t, :, cols.h(n)] = h
      if save:
        acts_ref, hn_ref = out_refs[2:]
        for g in range(NUM_GATES):
          acts_ref[t, :, cols.gate(g, n)] = acts[g]
        hn_ref[t, :, cols.h(n)] = acts[3]
      new_h.append(h)
    return tuple(new_h)

  tiles.store_tiles(hT_ref, jax.lax.fori_loop(0, num_steps, step, tiles.load_tiles(h0_ref, cols)), cols)


def _backward_kernel(wt_ref, acts_ref, hn_ref, hprev_ref, dhs_ref, dhT_ref, dxproj_ref, dhn_ref, dh0_ref, *,
                     num_steps, cols, matmul_dtype):
  """Reverse walk: ``dh`` from step t+1 and ``dhs[t]`` -> ``dxproj[t]``, ``dhn[t]``, ``dh_{t-1}``."""

  def step(s, dh_tiles):
    t = num_steps - 1 - s
    dgate_tiles, direct = {}, []
    for n in range(cols.num_tiles):
      r, z, cand = (acts_ref[t, :, cols.gate(g, n)] for g in range(NUM_GATES))
      a = dh_tiles[n] + dhs_ref[t, :, cols.h(n)]
      dpn = a * (1.0 - z) * (1.0 - cand * cand)
      dpz = a * (hprev_ref[t, :, cols.h(n)] - cand) * (z * (1.0 - z))
      dhn = dpn * r
      dpr = dpn * hn_ref[t, :, cols.h(n)] * (r * (1.0 - r))
      for g, d in ((R, dpr), (Z, dpz), (N, dpn)):
        dxproj_ref[t, :, cols.gate(g, n)] = d
      dhn_ref[t, :, cols.h(n)] = dhn
      for g, d in ((R, dpr), (Z, dpz), (N, dhn)):
        dgate_tiles[g, n] = d.astype(matmul_dtype)
      direct.append(a * z)
    return tuple(tiles.gate_dot_t(direct[k], dgate_tiles, wt_ref, k, NUM_GATES, cols)
                 for k in range(cols.num_tiles))

  tiles.store_tiles(dh0_ref, jax.lax.fori_loop(0, num_steps, step, tiles.load_tiles(dhT_ref, cols)), cols)


# ----------------------------------------------------------------------------------------------------------------
# The pallas_calls on padded arrays (all with the members axis K), and the custom_vjp around them.
# ----------------------------------------------------------------------------------------------------------------

def _forward_call(Wp, bp, xp, h0p, cfg: tiles.Config, lay: tiles.Layout, save: bool):
  """Padded ``Wp [K, Hp, 3Hp]``, ``bp [K, 1, Hp]``, ``xp [K, T, Bp, 3Hp]``, ``h0p [K, Bp, Hp]`` -> ``hs``, ``hT``
  (+ ``acts [K, T, Bp, 3Hp]``, ``hn [K, T, Bp, Hp]``)."""
  blocks = tiles.Blocks(*xp.shape[:2], lay)
  G = NUM_GATES * lay.Hp
  outs = [blocks.seq_out(lay.Hp), blocks.state_out()]
  if save:
    outs += [blocks.seq_out(G), blocks.seq_out(lay.Hp)]
  kernel = functools.partial(_forward_kernel, num_steps=blocks.T, cols=tiles.Columns(lay.Hp, lay.bh),
                             matmul_dtype=jnp.dtype(cfg.matmul_dtype), save=save)
  in_specs = [blocks.seq(G), blocks.whole(lay.Hp, G), blocks.whole(1, lay.Hp), blocks.state()]
  return tiles.call(kernel, "gru_forward_save" if save else "gru_forward", cfg, blocks, (xp, Wp, bp, h0p),
                    in_specs, outs)


def _backward_call(WTp, acts, hn, hprev, dhsp, dhTp, cfg: tiles.Config, lay: tiles.Layout):
  """``WTp [K, 3Hp, Hp]``, saved ``acts [K, T, Bp, 3Hp]``, ``hn``, ``h_prev``, ``dhs [K, T, Bp, Hp]``, ``dhT`` ->
  ``dxproj [K, T, Bp, 3Hp]``, ``dhn [K, T, Bp, Hp]``, ``dh0 [K, Bp, Hp]``."""
  blocks = tiles.Blocks(*acts.shape[:2], lay)
  G = NUM_GATES * lay.Hp
  kernel = functools.partial(_backward_kernel, num_steps=blocks.T, cols=tiles.Columns(lay.Hp, lay.bh),
                             matmul_dtype=jnp.dtype(cfg.matmul_dtype))
  in_specs = [blocks.whole(G, lay.Hp), blocks.seq(G)] + [blocks.seq(lay.Hp)] * 3 + [blocks.state()]
  return tiles.call(kernel, "gru_backward", cfg, blocks, (WTp, acts, hn, hprev, dhsp, dhTp), in_specs,
                    [blocks.seq_out(G), blocks.seq_out(lay.Hp), blocks.state_out()])


def _forward(cfg: tiles.Config, W_h, b_hn, xproj, h0, save: bool):
  """``((hT, hs), residuals)``; residuals (``save``): the inputs, ``hs`` and the padded ``acts``, ``hn``."""
  K, T, B, H = tiles.check_shapes(W_h, xproj, NUM_GATES)
  lay = tiles.layout(cfg.backend, B, H, cfg.matmul_dtype)
  outs = _forward_call(tiles.pad_weights(W_h, H, lay, cfg.matmul_dtype, NUM_GATES), tiles.pad_row(b_hn, H, lay),
                       tiles.pad_gates(xproj.astype(jnp.float32), B, H, lay, NUM_GATES),
                       tiles.pad_state(h0, B, H, lay), cfg, lay, save)
  hs, hT = tiles.unpad_state(outs[0], B, H, xproj.dtype), tiles.unpad_state(outs[1], B, H, h0.dtype)
  return (hT, hs), ((W_h, b_hn, xproj, h0, hs, *outs[2:]) if save else None)


def _backward(cfg: tiles.Config, saved, cotangents):
  W_h, b_hn, xproj, h0, hs, acts, hn = saved
  dhT, dhs = cotangents
  K, T, B, H = tiles.check_shapes(W_h, xproj, NUM_GATES)
  lay = tiles.layout(cfg.backend, B, H, cfg.matmul_dtype)
  WTp = jnp.swapaxes(tiles.pad_weights(W_h, H, lay, cfg.matmul_dtype, NUM_GATES), 1, 2)
  h_prev = tiles.previous_states(h0, hs)
  pad = lambda x: tiles.pad_state(x, B, H, lay)
  dx_p, dhn_p, dh0_p = _backward_call(WTp, acts, hn, pad(h_prev), pad(dhs), pad(dhT), cfg, lay)
  dxproj = tiles.unpad_gates(dx_p, B, H, lay, NUM_GATES)
  dhn = tiles.unpad_state(dhn_p, B, H, jnp.float32)
  dW_h = tiles.weight_grad(h_prev, jnp.concatenate([dxproj[..., :2 * H], dhn], axis=-1))
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


def layer(params, xs_TBI: jax.Array, carry: jax.Array | None = None, unroll: int = 1,
          **kwargs) -> tuple[jax.Array, jax.Array]:
  """A whole reset-after GRU layer over ``[T, B, in]``: the hoisted input projection, then the Pallas recurrence."""
  return tiles.run_layer(gru.reset_after, recurrence, params, xs_TBI, carry, unroll, **kwargs)


__all__ = ["recurrence", "population_recurrence", "layer"]
