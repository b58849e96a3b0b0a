"""PyTorch interop: ``torch.nn.LSTM`` (+ ``nn.Linear`` head) state dicts <-> our parameters.

PyTorch stores, per layer ``k``, ``weight_ih_l{k}`` ``[4H, in]``, ``weight_hh_l{k}`` ``[4H, H]`` and two biases
``bias_ih_l{k}``, ``bias_hh_l{k}`` ``[4H]``, gate blocks in the order i, f, g, o (ours too). So
``W_x = weight_ih.T``, ``W_h = weight_hh.T``, ``b = bias_ih + bias_hh``. Back to PyTorch, the whole bias goes to
``bias_ih`` and ``bias_hh`` is zero (the sum, which is all the model sees, is preserved). PyTorch's carry is
``(h, c)`` with a leading layer axis ``[layers, B, H]``. Needs only NumPy: pass tensors or arrays.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np


def _array(value) -> np.ndarray:
  return np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, np.float32)


def lstm_from_torch(state_dict: Mapping[str, Any]) -> tuple[dict[str, jnp.ndarray], ...]:
  """An ``nn.LSTM`` state dict (any number of layers, unidirectional) -> our ``params["layers"]`` tuple."""
  layers, k = [], 0
  while f"weight_ih_l{k}" in state_dict:
    bias = _array(state_dict.get(f"bias_ih_l{k}", 0.0)) + _array(state_dict.get(f"bias_hh_l{k}", 0.0))
    W_x = _array(state_dict[f"weight_ih_l{k}"]).T
    layers.append({"W_x": jnp.asarray(W_x), "W_h": jnp.asarray(_array(state_dict[f"weight_hh_l{k}"]).T),
                   "b": jnp.asarray(np.broadcast_to(bias, (W_x.shape[1],)))})
    k += 1
  if not layers:
    raise ValueError("No 'weight_ih_l0' in the state dict: pass torch.nn.LSTM(...).state_dict() "
                     "(bidirectional '_reverse' weights are not supported).")
  return tuple(layers)


def lstm_to_torch(layers) -> dict[str, np.ndarray]:
  """Our ``params["layers"]`` -> an ``nn.LSTM`` state dict (NumPy arrays; wrap with ``torch.from_numpy``)."""
  state = {}
  for k, layer in enumerate(layers):
    state[f"weight_ih_l{k}"] = np.asarray(layer["W_x"]).T.copy()
    state[f"weight_hh_l{k}"] = np.asarray(layer["W_h"]).T.copy()
    state[f"bias_ih_l{k}"] = np.asarray(layer["b"]).copy()
    state[f"bias_hh_l{k}"] = np.zeros_like(state[f"bias_ih_l{k}"])
  return state


def linear_from_torch(state_dict: Mapping[str, Any]) -> dict[str, jnp.ndarray]:
  """An ``nn.Linear`` state dict (``weight [V, H]``, ``bias [V]``) -> our ``params["head"]``."""
  return {"W": jnp.asarray(_array(state_dict["weight"]).T), "b": jnp.asarray(_array(state_dict["bias"]))}
