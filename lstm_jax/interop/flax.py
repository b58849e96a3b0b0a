"""Converters between our fused LSTM parameters and other libraries' layouts.

Ours (``lstm_jax.cells.lstm``), gate blocks side by side in the order i, f, g, o::

    {"W_x": [in, 4H], "W_h": [H, 4H], "b": [4H]}          carry LSTMCarry(h, c)

Flax ``nn.LSTMCell`` and ``nn.OptimizedLSTMCell`` (flax 0.12; both use the same names and values), eight Dense
layers, one per gate and side; only the hidden side has a bias::

    {"ii": {"kernel": [in, H]}, "if": ..., "ig": ..., "io": ...,
     "hi": {"kernel": [H, H], "bias": [H]}, "hf": ..., "hg": ..., "ho": ...}     carry (c, h)

Our ``W_x[:, k*H:(k+1)*H]`` is the kernel of ``"i" + gate_k``, ``W_h[:, k*H:(k+1)*H]`` and ``b[k*H:(k+1)*H]`` are
the kernel and bias of ``"h" + gate_k``: a lossless relabelling in both directions. The Flax tree here is the
cell's own params (``variables["params"]`` of a bare cell, ``variables["params"]["cell"]`` under ``nn.RNN``).
Being linear, the converters also map gradients.

PyTorch ``nn.LSTM`` state-dict converters belong in this module too (not written yet).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from lstm_jax.cells.lstm import GATE_ORDER, NUM_GATES, LSTMCarry

Params = dict[str, jax.Array]

FLAX_INPUT_NAMES = tuple("i" + gate for gate in GATE_ORDER)    # ii, if, ig, io
FLAX_HIDDEN_NAMES = tuple("h" + gate for gate in GATE_ORDER)   # hi, hf, hg, ho


def _check_ours(params: Params) -> int:
  """Validates our LSTM tree and returns the hidden size."""
  if set(params) != {"W_x", "W_h", "b"}:
    raise ValueError(f"Expected LSTM params with keys ['W_x', 'W_h', 'b'], got {sorted(params)}; "
                     f"pass one layer's dict, e.g. model_params['layers'][0].")
  hidden_size = params["W_h"].shape[0]
  fused = NUM_GATES * hidden_size
  if params["W_h"].shape != (hidden_size, fused) or params["W_x"].shape[-1] != fused or params["b"].shape != (fused,):
    raise ValueError(f"Inconsistent LSTM shapes W_x {params['W_x'].shape}, W_h {params['W_h'].shape}, "
                     f"b {params['b'].shape}; expected [in, 4H], [H, 4H], [4H].")
  return hidden_size


def to_flax_lstm(params: Params) -> dict[str, dict[str, jax.Array]]:
  """Our ``{"W_x", "W_h", "b"}`` -> the params of Flax ``nn.LSTMCell`` / ``nn.OptimizedLSTMCell``."""
  _check_ours(params)
  W_x_blocks = jnp.split(params["W_x"], NUM_GATES, axis=1)
  W_h_blocks = jnp.split(params["W_h"], NUM_GATES, axis=1)
  b_blocks = jnp.split(params["b"], NUM_GATES)
  flax_params = {name: {"kernel": kernel} for name, kernel in zip(FLAX_INPUT_NAMES, W_x_blocks)}
  for name, kernel, bias in zip(FLAX_HIDDEN_NAMES, W_h_blocks, b_blocks):
    flax_params[name] = {"kernel": kernel, "bias": bias}
  return flax_params


def from_flax_lstm(flax_params: Any) -> Params:
  """The params of Flax ``nn.LSTMCell`` / ``nn.OptimizedLSTMCell`` -> our ``{"W_x", "W_h", "b"}``."""
  flax_params = dict(flax_params)
  if "params" in flax_params or "cell" in flax_params:
    raise ValueError("Pass the cell's own params: variables['params'] of a bare cell, or "
                     "variables['params']['cell'] under nn.RNN.")
  expected = set(FLAX_INPUT_NAMES + FLAX_HIDDEN_NAMES)
  if set(flax_params) != expected:
    raise ValueError(f"Expected Flax LSTM params with keys {sorted(expected)}, got {sorted(flax_params)}.")
  return {"W_x": jnp.concatenate([flax_params[name]["kernel"] for name in FLAX_INPUT_NAMES], axis=1),
          "W_h": jnp.concatenate([flax_params[name]["kernel"] for name in FLAX_HIDDEN_NAMES], axis=1),
          "b": jnp.concatenate([flax_params[name]["bias"] for name in FLAX_HIDDEN_NAMES])}


def carry_to_flax(carry: LSTMCarry) -> tuple[jax.Array, jax.Array]:
  """``LSTMCarry(h, c)`` -> Flax's ``(c, h)``."""
  return (carry.c, carry.h)


def carry_from_flax(carry: tuple[jax.Array, jax.Array]) -> LSTMCarry:
  """Flax's ``(c, h)`` -> ``LSTMCarry(h, c)``."""
  c, h = carry
  return LSTMCarry(h=h, c=c)


def to_flax_gru(params: Params) -> dict[str, dict[str, jax.Array]]:
  """Our ``gru_reset_after`` params -> Flax ``nn.GRUCell`` (input Dense ``ir, iz, in`` with bias; hidden ``hr, hz``
  without bias and ``hn`` with bias ``b_hn``). The reset-before ``gru`` has no Flax counterpart."""
  if set(params) != {"W_x", "W_h", "b", "b_hn"}:
    raise ValueError(f"Expected gru_reset_after params W_x, W_h, b, b_hn, got {sorted(params)}; Flax's GRUCell "
                     f"applies the reset gate after the recurrent matmul, as cell='gru_reset_after' does.")
  W_x, W_h, b = (jnp.split(params[k], 3, axis=-1) for k in ("W_x", "W_h", "b"))
  flax_params = {f"i{gate}": {"kernel": W_x[k], "bias": b[k]} for k, gate in enumerate("rzn")}
  flax_params.update({f"h{gate}": {"kernel": W_h[k]} for k, gate in enumerate("rz")})
  flax_params["hn"] = {"kernel": W_h[2], "bias": params["b_hn"]}
  return flax_params


def from_flax_gru(flax_params: Any) -> Params:
  """Flax ``nn.GRUCell`` params -> our ``gru_reset_after`` params."""
  return {"W_x": jnp.concatenate([flax_params[f"i{g}"]["kernel"] for g in "rzn"], axis=1),
          "W_h": jnp.concatenate([flax_params[f"h{g}"]["kernel"] for g in "rzn"], axis=1),
          "b": jnp.concatenate([flax_params[f"i{g}"]["bias"] for g in "rzn"]),
          "b_hn": flax_params["hn"]["bias"]}


def to_flax_simple(params: Params) -> dict[str, dict[str, jax.Array]]:
  """Our ``rnn`` params -> Flax ``nn.SimpleCell`` (``i``: kernel + bias, ``h``: kernel)."""
  return {"i": {"kernel": params["W_x"], "bias": params["b"]}, "h": {"kernel": params["W_h"]}}


def from_flax_simple(flax_params: Any) -> Params:
  return {"W_x": flax_params["i"]["kernel"], "W_h": flax_params["h"]["kernel"], "b": flax_params["i"]["bias"]}


# Our params -> Flax's, by Flax cell class (``lstm_jax.cells.REGISTRY`` names each family's class).
TO_FLAX = {"LSTMCell": to_flax_lstm, "OptimizedLSTMCell": to_flax_lstm, "GRUCell": to_flax_gru,
           "SimpleCell": to_flax_simple}
