"""Converters between our layer params and the params of Flax's NNX cells (the same layouts in flax 0.12.8 and
0.12.12).

A converted tree is the cell's pure param dict, ``nnx.to_pure_dict(nnx.state(cell, nnx.Param))``: what
``nnx.update(cell, tree)`` loads and ``nnx.merge(graphdef, tree)`` builds a cell from. ``load_into`` does the
update after checking every name and shape (``nnx.update`` itself accepts a wrong shape silently); ``params_of``
reads a cell back. Being linear relabellings, the converters also map gradients.

- ``nnx.LSTMCell``: the linen ``LSTMCell`` layout of ``lstm_jax.interop.flax`` (one ``Linear`` per gate and side,
  bias on the hidden side), with the input-forget kernel named ``if_`` (``if`` is a Python keyword)::

      {"ii": {"kernel": [in, H]}, "if_": ..., "ig": ..., "io": ...,
       "hi": {"kernel": [H, H], "bias": [H]}, "hf": ..., "hg": ..., "ho": ...}             carry (c, h)

- ``nnx.OptimizedLSTMCell``: unlike linen's, two fused ``Linear`` layers in our gate order i, f, g, o, so our
  arrays are its arrays::

      {"dense_i": {"kernel": W_x [in, 4H]}, "dense_h": {"kernel": W_h [H, 4H], "bias": b [4H]}}   carry (c, h)

- ``nnx.GRUCell``: fused, gate order r, z, n like our ``gru_reset_after``, but without the recurrent bias inside the
  reset product (``n = tanh(x W_xn + b_n + r * (h W_hn))``): it is our cell with ``b_hn = 0``. ``to_nnx_gru``
  refuses a nonzero ``b_hn`` (dropping it would change the function); ``from_nnx_gru`` returns ``b_hn = 0``::

      {"dense_i": {"kernel": W_x [in, 3H], "bias": b [3H]}, "dense_h": {"kernel": W_h [H, 3H]}}       carry h

- ``nnx.SimpleCell`` (tanh): ``{"dense_i": {"kernel": W_x, "bias": b}, "dense_h": {"kernel": W_h}}``, carry h.

The LSTM carries convert with ``carry_to_flax`` / ``carry_from_flax`` (NNX's cells keep linen's ``(c, h)``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lstm_jax.interop import flax as flax_interop
from lstm_jax.interop.flax import carry_from_flax, carry_to_flax  # noqa: F401 (NNX keeps linen's (c, h) carry)

Params = dict[str, jax.Array]

# linen -> NNX names (``if`` is a keyword, so nnx.LSTMCell's attribute is ``if_``).
_NNX_NAMES = {"if": "if_"}
_LINEN_NAMES = {v: k for k, v in _NNX_NAMES.items()}


def _check_keys(params: Any, expected: set[str], what: str) -> None:
  if not isinstance(params, dict) or set(params) != expected:
    got = sorted(params) if isinstance(params, dict) else type(params).__name__
    raise ValueError(f"Expected {what} params with keys {sorted(expected)}, got {got}; pass one layer's dict "
                     f"(model_params['layers'][k]) or one cell's nnx.to_pure_dict(nnx.state(cell, nnx.Param)).")


def to_nnx_lstm(params: Params) -> dict[str, dict[str, jax.Array]]:
  """Our LSTM ``{"W_x", "W_h", "b"}`` -> the params of ``nnx.LSTMCell``."""
  return {_NNX_NAMES.get(name, name): leaf for name, leaf in flax_interop.to_flax_lstm(params).items()}


def from_nnx_lstm(nnx_params: Any) -> Params:
  """The params of ``nnx.LSTMCell`` -> our LSTM ``{"W_x", "W_h", "b"}``."""
  nnx_params = dict(nnx_params)
  expected = {_NNX_NAMES.get(n, n) for n in flax_interop.FLAX_INPUT_NAMES + flax_interop.FLAX_HIDDEN_NAMES}
  _check_keys(nnx_params, expected, "nnx.LSTMCell")
  return flax_interop.from_flax_lstm({_LINEN_NAMES.get(name, name): leaf for name, leaf in nnx_params.items()})


def to_nnx_optimized_lstm(params: Params) -> dict[str, dict[str, jax.Array]]:
  """Our LSTM ``{"W_x", "W_h", "b"}`` -> the params of ``nnx.OptimizedLSTMCell`` (the same arrays)."""
  flax_interop._check_ours(params)  # noqa: SLF001 (the LSTM key and shape check, shared)
  return {"dense_i": {"kernel": params["W_x"]}, "dense_h": {"kernel": params["W_h"], "bias": params["b"]}}


def from_nnx_optimized_lstm(nnx_params: Any) -> Params:
  """The params of ``nnx.OptimizedLSTMCell`` -> our LSTM ``{"W_x", "W_h", "b"}``."""
  _check_keys(dict(nnx_params), {"dense_i", "dense_h"}, "nnx.OptimizedLSTMCell")
  params = {"W_x": nnx_params["dense_i"]["kernel"], "W_h": nnx_params["dense_h"]["kernel"],
            "b": nnx_params["dense_h"]["bias"]}
  flax_interop._check_ours(params)  # noqa: SLF001
  return params


def to_nnx_gru(params: Params) -> dict[str, dict[str, jax.Array]]:
  """Our ``gru_reset_after`` params -> ``nnx.GRUCell``'s; ``b_hn`` must be zero (NNX's GRU has no such bias).
  Under a trace (``jit``, ``grad``) the zero check is skipped: a traced ``b_hn`` is simply dropped."""
  _check_keys(params, {"W_x", "W_h", "b", "b_hn"}, "gru_reset_after")
  try:
    nonzero = bool(np.any(np.asarray(params["b_hn"]) != 0))
  except jax.errors.TracerArrayConversionError:
    nonzero = False
  if nonzero:
    raise ValueError("nnx.GRUCell has no recurrent bias inside the reset product (our b_hn), so these params "
                     "(b_hn nonzero) have no nnx.GRUCell equivalent; zero b_hn first (init_scheme d2l or flax "
                     "starts it at 0), or use linen's GRUCell via lstm_jax.interop.flax.to_flax_gru.")
  return {"dense_i": {"kernel": params["W_x"], "bias": params["b"]}, "dense_h": {"kernel": params["W_h"]}}


def from_nnx_gru(nnx_params: Any) -> Params:
  """``nnx.GRUCell``'s params -> our ``gru_reset_after`` params (``b_hn`` zero)."""
  _check_keys(dict(nnx_params), {"dense_i", "dense_h"}, "nnx.GRUCell")
  b = nnx_params["dense_i"]["bias"]
  return {"W_x": nnx_params["dense_i"]["kernel"], "W_h": nnx_params["dense_h"]["kernel"], "b": b,
          "b_hn": jnp.zeros((b.shape[0] // 3,), b.dtype)}


def to_nnx_simple(params: Params) -> dict[str, dict[str, jax.Array]]:
  """Our ``rnn`` params -> ``nnx.SimpleCell``'s."""
  _check_keys(params, {"W_x", "W_h", "b"}, "rnn")
  return {"dense_i": {"kernel": params["W_x"], "bias": params["b"]}, "dense_h": {"kernel": params["W_h"]}}


def from_nnx_simple(nnx_params: Any) -> Params:
  """``nnx.SimpleCell``'s params -> our ``rnn`` params."""
  _check_keys(dict(nnx_params), {"dense_i", "dense_h"}, "nnx.SimpleCell")
  return {"W_x": nnx_params["dense_i"]["kernel"], "W_h": nnx_params["dense_h"]["kernel"],
          "b": nnx_params["dense_i"]["bias"]}


# Converters by NNX cell class name (``lstm_jax.cells.REGISTRY`` names each family's class in ``flax_cell``).
TO_NNX = {"LSTMCell": to_nnx_lstm, "OptimizedLSTMCell": to_nnx_optimized_lstm, "GRUCell": to_nnx_gru,
          "SimpleCell": to_nnx_simple}
FROM_NNX = {"LSTMCell": from_nnx_lstm, "OptimizedLSTMCell": from_nnx_optimized_lstm, "GRUCell": from_nnx_gru,
            "SimpleCell": from_nnx_simple}


def _converter(cell: nnx.Module, table: dict[str, Any]):
  name = type(cell).__name__
  if name not in table:
    raise ValueError(f"No converter for {name}; the NNX cells with one are {sorted(table)}.")
  return table[name]


def load_into(cell: nnx.Module, params: Params) -> nnx.Module:
  """Loads our layer params into an NNX cell (``nnx.LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``,
  ``SimpleCell``) in place, after checking that every name and shape fits the cell; returns the cell."""
  tree = _converter(cell, TO_NNX)(params)
  shapes = jax.tree.map(jnp.shape, tree)
  want = jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(cell, nnx.Param)))
  if shapes != want:
    raise ValueError(f"These params do not fit {type(cell).__name__}(in_features={cell.in_features}, "
                     f"hidden_features={cell.hidden_features}): converted {shapes}, the cell has {want}.")
  nnx.update(cell, tree)
  return cell


def params_of(cell: nnx.Module) -> Params:
  """Our layer params from an NNX cell's current values."""
  return _converter(cell, FROM_NNX)(nnx.to_pure_dict(nnx.state(cell, nnx.Param)))
