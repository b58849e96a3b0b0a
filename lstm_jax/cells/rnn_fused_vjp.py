"""The tanh RNN with a hand-written backward pass over the whole sequence (``jax.custom_vjp``).

Same parameters, carry and results as ``lstm_jax.cells.rnn`` (whose ``init_params``, ``zero_carry``,
``project_inputs`` and ``step`` it re-exports); only ``recurrence`` differs, as ``lstm_fused_vjp`` does for the LSTM:

- forward: the plain ``lax.scan`` of ``h_t = tanh(xproj_t + h_{t-1} W_h)``; the hidden states it returns are all
  the backward needs (``tanh' = 1 - h^2``);
- backward: one reverse ``lax.scan`` with one ``[B, H] x [H, H]`` matmul per step,
  ``dz_t = (dh_t + dhs_t) * (1 - h_t^2)``, ``dh_{t-1} = dz_t W_h^T``;
- ``dW_h`` is then a single ``[H, T*B] x [T*B, H]`` matmul over all steps, and the gradient of the projected
  inputs is ``dz`` itself.

Autodiff of the plain scan accumulates ``dW_h`` inside the reverse loop with a second, small matmul per step.
Reverse mode only: for ``jax.jvp``/``jacfwd`` use ``recurrence="scan"``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lstm_jax.cells.matmul import dot, dot_as
from lstm_jax.cells.rnn import NUM_GATES, init_params, project_inputs, step, zero_carry  # noqa: F401


def _masked(h_BH: jax.Array, h_mask_BH: jax.Array | None) -> jax.Array:
  """``h`` as the recurrent matmul reads it: times the variational mask when there is one."""
  return h_BH if h_mask_BH is None else h_BH * h_mask_BH


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _fused(W_h, xproj_TBH, h0_BH, h_mask_BH, unroll):
  def body(h_BH, xproj_BH):
    h_BH = jnp.tanh(xproj_BH + dot(_masked(h_BH, h_mask_BH), W_h))
    return h_BH, h_BH

  return jax.lax.scan(body, h0_BH, xproj_TBH, unroll=unroll)


def _fused_fwd(W_h, xproj_TBH, h0_BH, h_mask_BH, unroll):
  final_BH, hs_TBH = _fused(W_h, xproj_TBH, h0_BH, h_mask_BH, unroll)
  return (final_BH, hs_TBH), (W_h, h0_BH, h_mask_BH, hs_TBH)


def _fused_bwd(unroll, saved, cotangents):
  """The reverse scan, then ``dW_h`` in one matmul; the mask is a constant (``recurrence`` stops its gradient)."""
  W_h, h0_BH, h_mask_BH, hs_TBH = saved
  d_final_BH, dhs_TBH = cotangents
  W_h_T = W_h.T

  def body(dh_BH, inputs):
    h_BH, dhs_BH = inputs
    dz_BH = (dh_BH + dhs_BH) * (1.0 - h_BH * h_BH)
    return _masked(dot(dz_BH, W_h_T), h_mask_BH), dz_BH

  dh0_BH, dz_TBH = jax.lax.scan(body, d_final_BH, (hs_TBH, dhs_TBH), reverse=True, unroll=unroll)
  hidden = W_h.shape[0]
  h_prev_TBH = _masked(jnp.concatenate([h0_BH[None], hs_TBH[:-1]], axis=0), h_mask_BH)
  dW_h = dot_as(h_prev_TBH.reshape(-1, hidden).T, dz_TBH.reshape(-1, hidden), W_h.dtype)
  return dW_h, dz_TBH, dh0_BH, None if h_mask_BH is None else jnp.zeros_like(h_mask_BH)


_fused.defvjp(_fused_fwd, _fused_bwd)


def recurrence(params, xproj_TBH: jax.Array, carry: jax.Array, unroll: int = 1,
               h_mask_BH: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """``(final h [B, H], hs [T, B, H])`` from projected inputs ``[T, B, H]``; equal to ``rnn.recurrence``, with
  the hand-written backward above. ``h_mask_BH``: the variational recurrent dropout's mask ``[B, H]``
  multiplying ``h_{t-1}`` where it enters ``h @ W_h`` (a constant; the states returned are unmasked)."""
  if h_mask_BH is not None:
    h_mask_BH = jax.lax.stop_gradient(h_mask_BH)
  return _fused(params["W_h"], xproj_TBH, carry, h_mask_BH, unroll)


def layer(params, xs_TBI: jax.Array, carry: jax.Array | None = None, unroll: int = 1) -> tuple[jax.Array, jax.Array]:
  """A whole RNN layer over a time-major sequence ``[T, B, in]``; returns ``(final h, hs [T, B, H])``."""
  if carry is None:
    carry = zero_carry(xs_TBI.shape[1], params["W_h"].shape[0], xs_TBI.dtype)
  return recurrence(params, project_inputs(params, xs_TBI), carry, unroll=unroll)
