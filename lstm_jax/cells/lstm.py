"""The fused LSTM, written from scratch in pure JAX.

Parameters of one layer are a plain dict (a pytree)::

    {"W_x": [in, 4H], "W_h": [H, 4H], "b": [4H]}

with the four gate blocks side by side in the order **i, f, g, o** (input gate, forget gate, cell candidate,
output gate), the order of PyTorch's ``nn.LSTM`` and cuDNN, so their weights convert by transposition alone
(``lstm_jax.interop.torch``, ``lstm_jax.interop.cudnn``).

The carry is ``LSTMCarry(h, c)``: a named tuple, so code reads ``carry.h`` and never depends on a position.
``h`` comes first because it is the layer's output (PyTorch's ``(h, c)``); Flax's cells use ``(c, h)`` and
``lstm_jax.interop.flax`` translates.

The recurrence is time-major (``[time, batch, ...]``), the layout ``jax.lax.scan`` walks; the language model
transposes its integer tokens once instead of transposing activations. Per time step there is exactly one
``[B, H] x [H, 4H]`` matmul and one fused elementwise gate update; the input projection of the whole sequence
is a single ``[T*B, in] x [in, 4H]`` matmul (or a row gather for one-hot inputs) done before the scan.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lstm_jax.cells import initializers
from lstm_jax.cells.matmul import dot

NUM_GATES = 4
GATE_ORDER = ("i", "f", "g", "o")


class LSTMCarry(NamedTuple):
  """Recurrent state of one LSTM layer."""
  h: jax.Array  # [batch, hidden] hidden state (the layer's output)
  c: jax.Array  # [batch, hidden] cell state


def init_params(key: jax.Array, input_size: int, hidden_size: int, scheme: str = "d2l",
                forget_bias: float = 0.0, dtype=jnp.float32) -> dict[str, jax.Array]:
  """Initialises one fused layer: ``{"W_x": [in, 4H], "W_h": [H, 4H], "b": [4H]}``.

  ``forget_bias`` is added to the f block of the bias (1.0 is the common choice; D2L uses 0).
  """
  input_init, recurrent_init, bias_init = initializers.layer_initializers(scheme, hidden_size)
  k_x, k_h, k_b = jax.random.split(key, 3)
  fused = NUM_GATES * hidden_size
  b = bias_init(k_b, (fused,), dtype)
  b = b.at[hidden_size:2 * hidden_size].add(forget_bias)
  return {"W_x": input_init(k_x, (input_size, fused), dtype),
          "W_h": recurrent_init(k_h, (hidden_size, fused), dtype),
          "b": b}


def zero_carry(batch_size: int, hidden_size: int, dtype=jnp.float32) -> LSTMCarry:
  return LSTMCarry(h=jnp.zeros((batch_size, hidden_size), dtype), c=jnp.zeros((batch_size, hidden_size), dtype))


def gate_update(gates_BG: jax.Array, c_BH: jax.Array) -> LSTMCarry:
  """The elementwise half of a step: pre-activations ``[B, 4H]`` and old cell ``[B, H]`` -> new carry."""
  i, f, g, o = jnp.split(gates_BG, NUM_GATES, axis=-1)
  c = jax.nn.sigmoid(f) * c_BH + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return LSTMCarry(h=h, c=c)


def project_inputs(params: dict[str, jax.Array], xs_TBI: jax.Array) -> jax.Array:
  """The hoisted input projection: ``[T, B, in] -> [T, B, 4H]`` in one matmul (bias included)."""
  return dot(xs_TBI, params["W_x"]) + params["b"]


def recurrence(params: dict[str, jax.Array], xproj_TBG: jax.Array, carry: LSTMCarry,
               unroll: int = 1) -> tuple[LSTMCarry, jax.Array]:
  """Runs the recurrence over projected inputs ``[T, B, 4H]``; returns ``(final carry, hs [T, B, H])``."""
  W_h = params["W_h"]

  def step(carry: LSTMCarry, xproj_BG: jax.Array):
    carry = gate_update(xproj_BG + dot(carry.h, W_h), carry.c)
    return carry, carry.h

  return jax.lax.scan(step, carry, xproj_TBG, unroll=unroll)


def step(params: dict[str, jax.Array], carry: LSTMCarry, x_BI: jax.Array) -> tuple[LSTMCarry, jax.Array]:
  """One time step from raw inputs ``[B, in]`` (the form ``flax.linen.RNN`` drives); returns ``(carry, h)``."""
  carry = gate_update(dot(x_BI, params["W_x"]) + params["b"] + dot(carry.h, params["W_h"]), carry.c)
  return carry, carry.h


def layer(params: dict[str, jax.Array], xs_TBI: jax.Array, carry: LSTMCarry | None = None,
          unroll: int = 1) -> tuple[LSTMCarry, jax.Array]:
  """A whole LSTM layer over a time-major sequence ``[T, B, in]``; returns ``(final carry, hs [T, B, H])``."""
  if carry is None:
    carry = zero_carry(xs_TBI.shape[1], params["W_h"].shape[0], xs_TBI.dtype)
  return recurrence(params, project_inputs(params, xs_TBI), carry, unroll=unroll)
