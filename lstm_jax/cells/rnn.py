"""The vanilla (Elman, tanh) RNN in the fused scratch style: ``h_t = tanh(x_t W_x + b + h_{t-1} W_h)``.

Params ``{"W_x": [in, H], "W_h": [H, H], "b": [H]}``; the carry is ``h`` ``[B, H]`` itself. Same math and layout
as ``flax.linen.SimpleCell`` (kernels ``i``/``h``, bias on ``i``) and D2L's ``rnn`` scratch model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lstm_jax.cells import initializers
from lstm_jax.cells.matmul import dot

NUM_GATES = 1


def init_params(key: jax.Array, input_size: int, hidden_size: int, scheme: str = "d2l",
                dtype=jnp.float32) -> dict[str, jax.Array]:
  input_init, recurrent_init, bias_init = initializers.layer_initializers(scheme, hidden_size)
  k_x, k_h, k_b = jax.random.split(key, 3)
  return {"W_x": input_init(k_x, (input_size, hidden_size), dtype),
          "W_h": recurrent_init(k_h, (hidden_size, hidden_size), dtype),
          "b": bias_init(k_b, (hidden_size,), dtype)}


def zero_carry(batch_size: int, hidden_size: int, dtype=jnp.float32) -> jax.Array:
  return jnp.zeros((batch_size, hidden_size), dtype)


def project_inputs(params, xs_TBI: jax.Array) -> jax.Array:
  """``[T, B, in] -> [T, B, H]`` in one matmul, bias included."""
  return dot(xs_TBI, params["W_x"]) + params["b"]


def recurrence(params, xproj_TBH: jax.Array, carry: jax.Array, unroll: int = 1) -> tuple[jax.Array, jax.Array]:
  """``(final h [B, H], hs [T, B, H])`` from projected inputs ``[T, B, H]``."""
  W_h = params["W_h"]

  def step_fn(h_BH, xproj_BH):
    h_BH = jnp.tanh(xproj_BH + dot(h_BH, W_h))
    return h_BH, h_BH

  return jax.lax.scan(step_fn, carry, xproj_TBH, unroll=unroll)


def step(params, carry: jax.Array, x_BI: jax.Array) -> tuple[jax.Array, jax.Array]:
  h = jnp.tanh(dot(x_BI, params["W_x"]) + params["b"] + dot(carry, params["W_h"]))
  return h, h
