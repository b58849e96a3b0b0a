"""The tanh RNN recurrence as two Pallas kernels (whole-sequence forward, whole-sequence reverse) behind a
``custom_vjp``.

Same contract as ``lstm_jax.cells.rnn_fused_vjp.recurrence`` (and ``rnn.recurrence``): parameters
``{"W_h": [H, H], ...}``, projected inputs ``xproj [T, B, H]`` (time-major, bias included), carry ``h [B, H]``;
returns ``(final h [B, H], hs [T, B, H])`` and the gradients w.r.t. ``W_h``, ``xproj`` and ``h0``. A leading
members axis (``W_h [K, H, H]``, ``xproj [K, T, B, H]``, ``h0 [K, B, H]``, see ``population_recurrence``) runs as
the same single ``pallas_call`` with K as a grid axis.

What the kernels compute
------------------------
- Forward: ONE ``pallas_call``, grid ``(K, Bp / bB)`` ("parallel" axes). Each program owns ``bB`` batch rows
  and walks all T steps with ``lax.fori_loop``, ``h`` in registers: ``h_t = tanh(xproj_t + h_{t-1} W_h)`` (one
  ``[bB, H] x [H, H]`` dot per step, float32 accumulation), writing ``hs[t]``. ``hs`` is all the backward needs
  (``tanh' = 1 - h^2``), so the differentiated forward is the same kernel and saves nothing more.
- Backward: ONE reverse ``pallas_call``, carry ``dh`` in registers: ``dz_t = (dh_t + dhs_t) * (1 - h_t^2)``
  (written out: it is the gradient of ``xproj``), ``dh_{t-1} = dz_t W_h^T`` (one dot with ``W_h^T``, transposed
  once in the wrapper); it ends with ``dh0``. ``dW_h = h_prev^T @ dz`` is one XLA matmul over all ``T*B`` rows.

Layout, tiles and backends: as the LSTM kernels (``lstm_jax.kernels.tiles``), with G = 1 gate block:
``W_h [Hp, Hp]``, ``xproj``/``hs``/``dz`` ``[T, Bp, Hp]``. Padded units get zero weights and zero inputs, so
their state is ``tanh(0) = 0`` at every step, and their gradients are zero.

Differences from the LSTM kernels: one gate (so per step ``(Hp/bh)^2`` dots instead of ``4 (Hp/bh)^2``), one
state (no cell ``c``), no saved activations (the backward reads ``hs``).

Known limits: those of ``lstm_pallas`` (W_h re-read from L2 every step on GPU, statically unrolled tile loops;
on TPU ``W_h`` ``4 Hp^2`` bytes f32 plus the sequence blocks must fit in VMEM). ``unroll`` is accepted for the
contract and ignored. Reverse mode only (custom_vjp).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lstm_jax.cells import rnn
from lstm_jax.cells.rnn import NUM_GATES
from lstm_jax.kernels import tiles

# ----------------------------------------------------------------------------------------------------------------
# Kernels. Per program: seq refs [T, bB, Hp], state refs [bB, Hp], weight refs [Hp, Hp].
# ----------------------------------------------------------------------------------------------------------------

def _forward_kernel(xproj_ref, w_ref, h0_ref, hs_ref, hT_ref, *, num_steps, cols, matmul_dtype):
  """``h_t = tanh(xproj_t + h_{t-1} W_h)`` over all T steps; writes ``hs[t]`` and ``h_T``."""

  def step(t, h_tiles):
    hm = tuple(h.astype(matmul_dtype) for h in h_tiles)
    new_h = tuple(jnp.tanh(tiles.gate_dot(xproj_ref[t, :, cols.h(n)].astype(jnp.float32), hm, w_ref, 0, n, cols))
                  for n in range(cols.num_tiles))
    for n, h in enumerate(new_h):
      hs_ref[t, :, cols.h(n)] = h
    return new_h

  tiles.store_tiles(hT_ref, jax.lax.fori_loop(0, num_steps, step, tiles.load_tiles(h0_ref, cols)), cols)


def _backward_kernel(wt_ref, hs_ref, dhs_ref, dhT_ref, dz_ref, dh0_ref, *, num_steps, cols, matmul_dtype):
  """Reverse walk: ``dh`` from step t+1 and ``dhs[t]`` -> ``dz[t]``, ``dh_{t-1} = dz[t] W_h^T``."""

  def step(s, dh_tiles):
    t = num_steps - 1 - s
    dz_tiles = {}
    for n in range(cols.num_tiles):
      h = hs_ref[t, :, cols.h(n)]
      dz = (dh_tiles[n] + dhs_ref[t, :, cols.h(n)]) * (1.0 - h * h)
      dz_ref[t, :, cols.h(n)] = dz
      dz_tiles[0, n] = dz.astype(matmul_dtype)
    return tuple(tiles.gate_dot_t(None, dz_tiles, wt_ref, k, NUM_GATES, cols) for k in range(cols.num_tiles))

  tiles.store_tiles(dh0_ref, jax.lax.fori_loop(0, num_steps, step, tiles.load_tiles(dhT_ref, cols)), cols)


# ----------------------------------------------------------------------------------------------------------------
# The pallas_calls on padded arrays (all with the members axis K), and the custom_vjp around them.
# ----------------------------------------------------------------------------------------------------------------

def _forward_call(Wp, xp, h0p, cfg: tiles.Config, lay: tiles.Layout):
  """Padded ``Wp [K, Hp, Hp]``, ``xp [K, T, Bp, Hp]``, ``h0p [K, Bp, Hp]`` -> ``hs [K, T, Bp, Hp]``, ``hT``."""
  blocks = tiles.Blocks(*xp.shape[:2], lay)
  kernel = functools.partial(_forward_kernel, num_steps=blocks.T, cols=tiles.Columns(lay.Hp, lay.bh),
                             matmul_dtype=jnp.dtype(cfg.matmul_dtype))
  in_specs = [blocks.seq(lay.Hp), blocks.whole(lay.Hp, lay.Hp), blocks.state()]
  return tiles.call(kernel, "rnn_forward", cfg, blocks, (xp, Wp, h0p), in_specs,
                    [blocks.seq_out(lay.Hp), blocks.state_out()])


def _backward_call(WTp, hsp, dhsp, dhTp, cfg: tiles.Config, lay: tiles.Layout):
  """``WTp [K, Hp, Hp]``, ``hs``, ``dhs [K, T, Bp, Hp]``, ``dhT [K, Bp, Hp]`` -> ``dz [K, T, Bp, Hp]``, ``dh0``."""
  blocks = tiles.Blocks(*hsp.shape[:2], lay)
  kernel = functools.partial(_backward_kernel, num_steps=blocks.T, cols=tiles.Columns(lay.Hp, lay.bh),
                             matmul_dtype=jnp.dtype(cfg.matmul_dtype))
  in_specs = [blocks.whole(lay.Hp, lay.Hp), blocks.seq(lay.Hp), blocks.seq(lay.Hp), blocks.state()]
  return tiles.call(kernel, "rnn_backward", cfg, blocks, (WTp, hsp, dhsp, dhTp), in_specs,
                    [blocks.seq_out(lay.Hp), blocks.state_out()])


def _forward(cfg: tiles.Config, W_h, xproj, h0, save: bool):
  """``((hT, hs), residuals)``; the residuals (``save``) are the inputs and ``hs``."""
  K, T, B, H = tiles.check_shapes(W_h, xproj, NUM_GATES)
  lay = tiles.layout(cfg.backend, B, H, cfg.matmul_dtype)
  hs_p, hT_p = _forward_call(tiles.pad_weights(W_h, H, lay, cfg.matmul_dtype, NUM_GATES),
                             tiles.pad_gates(xproj.astype(jnp.float32), B, H, lay, NUM_GATES),
                             tiles.pad_state(h0, B, H, lay), cfg, lay)
  hs, hT = tiles.unpad_state(hs_p, B, H, xproj.dtype), tiles.unpad_state(hT_p, B, H, h0.dtype)
  return (hT, hs), ((W_h, xproj, h0, hs) if save else None)


def _backward(cfg: tiles.Config, saved, cotangents):
  W_h, xproj, h0, hs = saved
  dhT, dhs = cotangents
  K, T, B, H = tiles.check_shapes(W_h, xproj, NUM_GATES)
  lay = tiles.layout(cfg.backend, B, H, cfg.matmul_dtype)
  WTp = jnp.swapaxes(tiles.pad_weights(W_h, H, lay, cfg.matmul_dtype, NUM_GATES), 1, 2)
  pad = lambda x: tiles.pad_state(x, B, H, lay)
  dz_p, dh0_p = _backward_call(WTp, pad(hs), pad(dhs), pad(dhT), cfg, lay)
  dz = tiles.unpad_state(dz_p, B, H, jnp.float32)
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


def layer(params, xs_TBI: jax.Array, carry: jax.Array | None = None, unroll: int = 1,
          **kwargs) -> tuple[jax.Array, jax.Array]:
  """A whole RNN layer over ``[T, B, in]``: the hoisted input projection, then the Pallas recurrence."""
  return tiles.run_layer(rnn, recurrence, params, xs_TBI, carry, unroll, **kwargs)


__all__ = ["recurrence", "population_recurrence", "layer"]
