"""The fused LSTM with a hand-written backward pass over the whole sequence (``jax.custom_vjp``).

Same parameters, carry, gate order and results as ``lstm_jax.cells.lstm`` (whose ``init_params``, ``zero_carry``,
``project_inputs`` and ``step`` it re-exports, so it also works as a family module); only ``recurrence``
differs. It is what ``LanguageModel(recurrence="fused_vjp")`` (and "auto" for the LSTM) runs. The gradient is
computed the way cuDNN and oneDNN do it:

- forward: one ``lax.scan``; per step one ``[B, H] x [H, 4H]`` matmul, one ``tanh`` over the whole ``[B, 4H]``
  gate block (``sigmoid(x) = tanh(x/2)/2 + 1/2``), and the factors the backward step multiplies by, written
  over the step's row of the projected inputs (in place: no new ``[T, B, 4H]`` buffer is allocated);
- backward: one reverse ``lax.scan``; per step a few elementwise ops giving the gate gradients ``[B, 4H]``
  (written over the factors) and one ``[B, 4H] x [4H, H]`` matmul for the hidden-state gradient;
- the recurrent-weight gradient is then a single ``[H, T*B] x [T*B, 4H]`` matmul over all steps; the gradient
  of the projected inputs is the gate gradients themselves, so ``W_x``/``b`` get theirs from the hoisted
  projection by ordinary autodiff;
- with the variational recurrent dropout's mask ``[B, H]`` (``recurrence(..., h_mask_BH=)``) each step reads
  ``h_{t-1} * mask``, the reverse step multiplies the hidden-state gradient by the mask, and ``dW_h`` is formed
  from the masked states.

Autodiff of the plain scan instead saves more arrays per step, runs more small kernels per step and
accumulates ``dW_h`` inside the reverse loop with one small matmul per step. On a 2-core CPU the full train
step is ~1.3x faster at both benchmark sizes (``python -m lstm_jax.commands.benchmark``). Without differentiation the
forward is a plain scan with the single-``tanh`` gates. Reverse mode only: for ``jax.jvp``/``jacfwd`` use
``recurrence="scan"``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lstm_jax.cells.lstm import (GATE_ORDER, NUM_GATES, LSTMCarry, init_params, project_inputs,  # noqa: F401
                                 step, zero_carry)
from lstm_jax.cells.matmul import dot, dot_as


def _activation_constants(hidden: int, dtype) -> tuple[jax.Array, jax.Array]:
  """Per-column ``(scale, shift)`` ``[4H]`` with ``act(x) = tanh(scale * x) * scale + shift`` for all four gates.

  ``sigmoid(x) = tanh(x / 2) / 2 + 1/2``, so one ``tanh`` over the whole ``[B, 4H]`` block gives the sigmoids of
  i, f, o (scale 1/2, shift 1/2) and the tanh of g (scale 1, shift 0): one vectorised elementwise op per step.
  """
  half, one, zero = jnp.full((hidden,), 0.5, dtype), jnp.ones((hidden,), dtype), jnp.zeros((hidden,), dtype)
  return jnp.concatenate([half, half, one, half]), jnp.concatenate([half, half, zero, half])


def _masked(h_BH: jax.Array, h_mask_BH: jax.Array | None) -> jax.Array:
  """``h`` as the recurrent matmul reads it: times the variational mask when there is one."""
  return h_BH if h_mask_BH is None else h_BH * h_mask_BH


def _forward_step(W_h, scale_G, shift_G, h_mask_BH, carry: LSTMCarry, xproj_BG: jax.Array):
  """One step returning ``(carry, (h, activated gates [B, 4H], c))``; ``h_mask_BH`` (or None) multiplies
  ``h_{t-1}`` where it enters ``h @ W_h``."""
  act_BG = jnp.tanh((xproj_BG + dot(_masked(carry.h, h_mask_BH), W_h)) * scale_G) * scale_G + shift_G
  i, f, g, o = jnp.split(act_BG, NUM_GATES, axis=-1)
  c = f * carry.c + i * g
  h = o * jnp.tanh(c)
  return LSTMCarry(h=h, c=c), (h, act_BG, c)


def _backward_factors(act_BG, c_prev_BH, c_BH):
  """What the reverse step multiplies by, formed in the forward step while the operands are at hand.

  ``d gates = [g*i', c_prev*f', i*g', tanh(c)*o'] * [dc, dc, dc, dh]`` (four ``[B, H]`` blocks),
  ``dc = dc_next + dh * o*(1-tanh(c)^2)`` and ``dc_prev = dc * f``, where ``x'`` is the derivative of gate x's
  activation (``a(1-a)`` for the sigmoids, ``1-a^2`` for the tanh).
  """
  i, f, g, o = jnp.split(act_BG, NUM_GATES, axis=-1)
  tanh_c = jnp.tanh(c_BH)
  gate_factors = (g * i * (1.0 - i), c_prev_BH * f * (1.0 - f), i * (1.0 - g * g), tanh_c * o * (1.0 - o))
  return gate_factors, o * (1.0 - tanh_c * tanh_c), f


def _backward_step(W_h_T, h_mask_BH, grad_carry: LSTMCarry, inputs):
  """Reverse step: ``(dh, dc)`` from step t+1 and this step's ``dhs``/factors -> ``dgates [B, 4H]``."""
  gate_factor_BG, dhs_BH, dc_factor_BH, f_BH = inputs
  dh = grad_carry.h + dhs_BH
  dc = grad_carry.c + dh * dc_factor_BH
  dgates_BG = gate_factor_BG * jnp.concatenate([dc, dc, dc, dh], axis=-1)
  return LSTMCarry(h=_masked(dot(dgates_BG, W_h_T), h_mask_BH), c=dc * f_BH), dgates_BG


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _fused(W_h, xproj_TBG, carry, h_mask_BH, unroll):
  scale_G, shift_G = _activation_constants(W_h.shape[0], xproj_TBG.dtype)

  def body(carry, xproj_BG):
    carry, (h, _, _) = _forward_step(W_h, scale_G, shift_G, h_mask_BH, carry, xproj_BG)
    return carry, h

  return jax.lax.scan(body, carry, xproj_TBG, unroll=unroll)


def _fused_fwd(W_h, xproj_TBG, carry, h_mask_BH, unroll):
  """Overwrites row t of the projected inputs with step t's gate factors, in place (no fresh ``[T, B, 4H]``
  buffer to allocate, zero and copy), and stacks ``h``, ``dc_factor`` and ``f``."""
  hidden = W_h.shape[0]
  scale_G, shift_G = _activation_constants(hidden, xproj_TBG.dtype)

  def body(state, t):
    carry, buffer_TBG = state
    new_carry, (h, act_BG, c) = _forward_step(W_h, scale_G, shift_G, h_mask_BH, carry,
                                              jax.lax.dynamic_index_in_dim(buffer_TBG, t, keepdims=False))
    gate_factors, dc_factor, f = _backward_factors(act_BG, carry.c, c)
    for k, block_BH in enumerate(gate_factors):
      buffer_TBG = jax.lax.dynamic_update_slice(buffer_TBG, block_BH[None], (t, 0, k * hidden))
    return (new_carry, buffer_TBG), (h, dc_factor, f)

  (final, gate_factor_TBG), (hs_TBH, dc_factor_TBH, f_TBH) = jax.lax.scan(
      body, (carry, xproj_TBG), jnp.arange(xproj_TBG.shape[0]), unroll=unroll)
  return (final, hs_TBH), (W_h, carry.h, h_mask_BH, hs_TBH, gate_factor_TBG, dc_factor_TBH, f_TBH)


def _fused_bwd(unroll, saved, cotangents):
  """Reverse scan writing each step's ``dgates`` over its gate factors (in place), then ``dW_h`` in one matmul.
  The mask is a constant (``recurrence`` stops its gradient): its cotangent is zero."""
  W_h, h0_BH, h_mask_BH, hs_TBH, gate_factor_TBG, dc_factor_TBH, f_TBH = saved
  d_final, dhs_TBH = cotangents
  W_h_T = W_h.T

  def body(state, inputs):
    grad_carry, buffer_TBG = state
    t, dhs_BH, dc_factor_BH, f_BH = inputs
    gate_factor_BG = jax.lax.dynamic_index_in_dim(buffer_TBG, t, keepdims=False)
    grad_carry, dgates_BG = _backward_step(W_h_T, h_mask_BH, grad_carry,
                                           (gate_factor_BG, dhs_BH, dc_factor_BH, f_BH))
    return (grad_carry, jax.lax.dynamic_update_index_in_dim(buffer_TBG, dgates_BG, t, 0)), None

  steps = jnp.arange(hs_TBH.shape[0])
  (d_carry0, dgates_TBG), _ = jax.lax.scan(body, (LSTMCarry(*d_final), gate_factor_TBG),
                                           (steps, dhs_TBH, dc_factor_TBH, f_TBH), reverse=True, unroll=unroll)
  h_prev_TBH = _masked(jnp.concatenate([h0_BH[None], hs_TBH[:-1]], axis=0), h_mask_BH)
  hidden = W_h.shape[0]
  dW_h = dot_as(h_prev_TBH.reshape(-1, hidden).T, dgates_TBG.reshape(-1, dgates_TBG.shape[-1]), W_h.dtype)
  return dW_h, dgates_TBG, d_carry0, None if h_mask_BH is None else jnp.zeros_like(h_mask_BH)


_fused.defvjp(_fused_fwd, _fused_bwd)


def recurrence(params: dict[str, jax.Array], xproj_TBG: jax.Array, carry: LSTMCarry, unroll: int = 1,
               h_mask_BH: jax.Array | None = None) -> tuple[LSTMCarry, jax.Array]:
  """Runs the recurrence over projected inputs ``[T, B, 4H]``; returns ``(final carry, hs [T, B, H])``.

  Equal to ``lstm.recurrence``; its gradient comes from the hand-written whole-sequence backward above.
  ``h_mask_BH``: the variational recurrent dropout's mask ``[B, H]`` (kept ``1/(1-p)``, dropped 0), multiplying
  ``h_{t-1}`` where it enters ``h @ W_h`` at every step (the states returned are unmasked); a constant.
  """
  if h_mask_BH is not None:
    h_mask_BH = jax.lax.stop_gradient(h_mask_BH)
  final, hs_TBH = _fused(params["W_h"], xproj_TBG, LSTMCarry(*carry), h_mask_BH, unroll)
  return LSTMCarry(*final), hs_TBH


def layer(params: dict[str, jax.Array], xs_TBI: jax.Array, carry: LSTMCarry | None = None,
          unroll: int = 1) -> tuple[LSTMCarry, jax.Array]:
  """A whole LSTM layer over a time-major sequence ``[T, B, in]``; returns ``(final carry, hs [T, B, H])``."""
  if carry is None:
    carry = zero_carry(xs_TBI.shape[1], params["W_h"].shape[0], xs_TBI.dtype)
  return recurrence(params, project_inputs(params, xs_TBI), carry, unroll=unroll)
