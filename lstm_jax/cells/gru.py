"""The GRU in the fused scratch style, in both published forms. Gate blocks in the order **r, z, n**.

Params ``{"W_x": [in, 3H], "W_h": [H, 3H], "b": [3H]}`` (+ ``"b_hn": [H]`` for ``reset_after``); carry ``h`` ``[B, H]``.

- ``gru`` (D2L, Cho et al. 2014): the reset gate scales the state *before* the recurrent matmul,
  ``n = tanh(x W_xn + b_n + (r * h) W_hn)``; per step one ``[B, H] x [H, 2H]`` and one ``[B, H] x [H, H]`` matmul.
- ``gru_reset_after`` (cuDNN, ``flax.linen.GRUCell``): the reset gate scales the recurrent term *after* it,
  ``n = tanh(x W_xn + b_n + r * (h W_hn + b_hn))``; per step a single ``[B, H] x [H, 3H]`` matmul.
Both: ``r, z = sigmoid(...)``, ``h' = z * h + (1 - z) * n``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lstm_jax.cells import initializers
from lstm_jax.cells.matmul import dot

NUM_GATES = 3


def _init_params(key, input_size, hidden_size, scheme="d2l", dtype=jnp.float32, *, reset_after):
  input_init, recurrent_init, bias_init = initializers.layer_initializers(scheme, hidden_size)
  k_x, k_h, k_b, k_hn = jax.random.split(key, 4)
  params = {"W_x": input_init(k_x, (input_size, 3 * hidden_size), dtype),
            "W_h": recurrent_init(k_h, (hidden_size, 3 * hidden_size), dtype),
            "b": bias_init(k_b, (3 * hidden_size,), dtype)}
  if reset_after:
    params["b_hn"] = bias_init(k_hn, (hidden_size,), dtype)
  return params


def zero_carry(batch_size: int, hidden_size: int, dtype=jnp.float32) -> jax.Array:
  return jnp.zeros((batch_size, hidden_size), dtype)


def project_inputs(params, xs_TBI: jax.Array) -> jax.Array:
  """``[T, B, in] -> [T, B, 3H]`` in one matmul, bias included."""
  return dot(xs_TBI, params["W_x"]) + params["b"]


def _update(params, h_BH, xproj_BG, *, reset_after):
  hidden = h_BH.shape[-1]
  W_h = params["W_h"]
  if reset_after:
    hh = dot(h_BH, W_h)
    r = jax.nn.sigmoid(xproj_BG[:, :hidden] + hh[:, :hidden])
    z = jax.nn.sigmoid(xproj_BG[:, hidden:2 * hidden] + hh[:, hidden:2 * hidden])
    n = jnp.tanh(xproj_BG[:, 2 * hidden:] + r * (hh[:, 2 * hidden:] + params["b_hn"]))
  else:
    rz = jax.nn.sigmoid(xproj_BG[:, :2 * hidden] + dot(h_BH, W_h[:, :2 * hidden]))
    r, z = rz[:, :hidden], rz[:, hidden:]
    n = jnp.tanh(xproj_BG[:, 2 * hidden:] + dot(r * h_BH, W_h[:, 2 * hidden:]))
  return z * h_BH + (1.0 - z) * n


def _recurrence(params, xproj_TBG, carry, unroll=1, *, reset_after):
  def step_fn(h_BH, xproj_BG):
    h_BH = _update(params, h_BH, xproj_BG, reset_after=reset_after)
    return h_BH, h_BH
  return jax.lax.scan(step_fn, carry, xproj_TBG, unroll=unroll)


def _step(params, carry, x_BI, *, reset_after):
  h = _update(params, carry, project_inputs(params, x_BI), reset_after=reset_after)
  return h, h


def _variant(reset_after: bool):
  """The family-interface namespace of one form (registered in ``lstm_jax.cells.REGISTRY``)."""
  import types
  return types.SimpleNamespace(
      __name__=f"{__name__}[reset_after={reset_after}]", NUM_GATES=NUM_GATES,
      init_params=functools.partial(_init_params, reset_after=reset_after), zero_carry=zero_carry,
      project_inputs=project_inputs, recurrence=functools.partial(_recurrence, reset_after=reset_after),
      step=functools.partial(_step, reset_after=reset_after))


reset_before = _variant(False)   # "gru"
reset_after = _variant(True)     # "gru_reset_after"
