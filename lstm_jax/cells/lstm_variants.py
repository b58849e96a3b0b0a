"""Two LSTM variants from the literature, in the fused scratch style of ``lstm_jax.cells.lstm``.

Both keep the carry ``LSTMCarry(h, c)``, the hoisted input projection and one ``[B, H] x [H, G*H]`` matmul per
step inside ``lax.scan``; each is a family module (``peephole``, ``coupled``) registered in
``lstm_jax.cells.REGISTRY`` as ``lstm_peephole`` / ``lstm_coupled``, so the language model, the linen modules and
the masking/bidirectional wrappers take them by name.

- **Peephole** (Gers, Schraudolph & Schmidhuber, 2002): the gates also see the cell state through diagonal
  weights, the input and forget gates the old one, the output gate the new one::

      i = sigmoid(x W_xi + h W_hi + b_i + p_i * c_prev)      f = sigmoid(... + p_f * c_prev)
      g = tanh(x W_xg + h W_hg + b_g)                          c = f * c_prev + i * g
      o = sigmoid(x W_xo + h W_ho + b_o + p_o * c)             h = o * tanh(c)

  Params: the LSTM's ``{"W_x": [in, 4H], "W_h": [H, 4H], "b": [4H]}`` (gate order i, f, g, o) plus
  ``"peephole": [3, H]`` (rows p_i, p_f, p_o), initialised like the bias (zeros under ``d2l``/``flax``: the
  cell starts as a plain LSTM).
- **Coupled input-forget gate** (CIFG; Greff et al., "LSTM: A Search Space Odyssey", 2017): ``f = 1 - i``, so
  there are three gate blocks, order **i, g, o**: ``{"W_x": [in, 3H], "W_h": [H, 3H], "b": [3H]}`` and
  ``c = (1 - i) * c_prev + i * g``, ``h = o * tanh(c)``.
"""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp

from lstm_jax.cells import initializers
from lstm_jax.cells.lstm import LSTMCarry, zero_carry
from lstm_jax.cells.matmul import dot


def _project_inputs(params, xs_TBI: jax.Array) -> jax.Array:
  """``[T, B, in] -> [T, B, G*H]`` in one matmul, bias included."""
  return dot(xs_TBI, params["W_x"]) + params["b"]


def _fused_params(key, input_size, hidden_size, num_gates, scheme, dtype):
  input_init, recurrent_init, bias_init = initializers.layer_initializers(scheme, hidden_size)
  k_x, k_h, k_b = jax.random.split(key, 3)
  fused = num_gates * hidden_size
  return {"W_x": input_init(k_x, (input_size, fused), dtype),
          "W_h": recurrent_init(k_h, (hidden_size, fused), dtype),
          "b": bias_init(k_b, (fused,), dtype)}


def _family(update, init_params, gate_order):
  """A family module around ``update(params, gates_BG, c_BH) -> LSTMCarry``: the scan with one recurrent matmul
  per step, the one-step form for ``flax.linen.RNN``, and the LSTM's carry and input projection."""

  def recurrence(params, xproj_TBG, carry, unroll: int = 1):
    """``(final carry, hs [T, B, H])`` from projected inputs ``[T, B, G*H]``."""
    W_h = params["W_h"]

    def body(carry: LSTMCarry, xproj_BG):
      carry = update(params, xproj_BG + dot(carry.h, W_h), carry.c)
      return carry, carry.h

    return jax.lax.scan(body, LSTMCarry(*carry), xproj_TBG, unroll=unroll)

  def step(params, carry, x_BI):
    carry = update(params, dot(x_BI, params["W_x"]) + params["b"] + dot(carry.h, params["W_h"]), carry.c)
    return carry, carry.h

  return SimpleNamespace(NUM_GATES=len(gate_order), GATE_ORDER=gate_order, init_params=init_params,
                         zero_carry=zero_carry, project_inputs=_project_inputs, recurrence=recurrence, step=step)


# ------------------------------------------------------------------------------------------------------- peephole

def _peephole_init(key, input_size: int, hidden_size: int, scheme: str = "d2l", forget_bias: float = 0.0,
                   dtype=jnp.float32):
  k_fused, k_peep = jax.random.split(key)
  params = _fused_params(k_fused, input_size, hidden_size, 4, scheme, dtype)
  params["b"] = params["b"].at[hidden_size:2 * hidden_size].add(forget_bias)
  _, _, bias_init = initializers.layer_initializers(scheme, hidden_size)
  params["peephole"] = bias_init(k_peep, (3, hidden_size), dtype)
  return params


def _peephole_update(params, gates_BG: jax.Array, c_BH: jax.Array) -> LSTMCarry:
  p_i, p_f, p_o = params["peephole"]
  i, f, g, o = jnp.split(gates_BG, 4, axis=-1)
  c = jax.nn.sigmoid(f + p_f * c_BH) * c_BH + jax.nn.sigmoid(i + p_i * c_BH) * jnp.tanh(g)
  h = jax.nn.sigmoid(o + p_o * c) * jnp.tanh(c)
  return LSTMCarry(h=h, c=c)


peephole = _family(_peephole_update, _peephole_init, ("i", "f", "g", "o"))


# -------------------------------------------------------------------------------------------------------- coupled

def _coupled_init(key, input_size: int, hidden_size: int, scheme: str = "d2l", dtype=jnp.float32):
  return _fused_params(key, input_size, hidden_size, 3, scheme, dtype)


def _coupled_update(params, gates_BG: jax.Array, c_BH: jax.Array) -> LSTMCarry:
  del params
  i, g, o = jnp.split(gates_BG, 3, axis=-1)
  i = jax.nn.sigmoid(i)
  c = c_BH + i * (jnp.tanh(g) - c_BH)  # == (1 - i) * c_prev + i * g
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return LSTMCarry(h=h, c=c)


coupled = _family(_coupled_update, _coupled_init, ("i", "g", "o"))
