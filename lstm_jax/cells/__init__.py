"""Recurrent cells written from scratch, one module per family, all with the same functional interface.

Every family module provides ``init_params(key, input_size, hidden_size, scheme, ...)`` returning
``{"W_x": [in, G*H], "W_h": [H, G*H], "b": [G*H], ...}``, ``zero_carry(batch, hidden)``,
``project_inputs(params, xs_TBI)`` and ``recurrence(params, xproj_TBG, carry, unroll)``.

``REGISTRY`` is the one place that knows, per config name (``model.cell``): the family module, its gate count
``G``, its hand-written whole-sequence backward (``recurrence="fused_vjp"``), and its counterparts in Flax
(``flax.linen`` / ``flax.nnx`` class name and activation) and PyTorch (``torch.nn`` module). ``rnn_relu`` exists
only as a library cell (the book's Gluon ``rnn.RNN`` default).
"""

from __future__ import annotations

import inspect

import dataclasses
from types import ModuleType, SimpleNamespace
from typing import Any, Callable

from lstm_jax.cells import gru, lstm, lstm_fused_vjp, lstm_variants, rnn, rnn_fused_vjp


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  module: ModuleType | SimpleNamespace | None   # the scratch math (None: a library-only cell)
  num_gates: int                                # G: gate blocks in W_x / W_h / b
  fused_vjp: Callable[..., Any] | None = None   # recurrence with a hand-written backward, same contract
  flax_cell: str | None = None                  # flax.linen / flax.nnx cell class holding the same function
  flax_activation: str = "tanh"                 # SimpleCell's activation
  torch_module: str | None = None               # torch.nn module of the same function


REGISTRY: dict[str, Family] = {f.name: f for f in (
    Family("lstm", lstm, 4, lstm_fused_vjp.recurrence, "LSTMCell", torch_module="LSTM"),
    Family("gru", gru.reset_before, 3),          # D2L's GRU: reset gate before the recurrent matmul; no library twin
    Family("gru_reset_after", gru.reset_after, 3, flax_cell="GRUCell", torch_module="GRU"),  # cuDNN's / Flax's
    Family("rnn", rnn, 1, rnn_fused_vjp.recurrence, "SimpleCell", torch_module="RNN"),        # tanh RNN
    Family("rnn_relu", None, 1, flax_cell="SimpleCell", flax_activation="relu"),
    Family("lstm_peephole", lstm_variants.peephole, 4),  # gates see the cell state (Gers et al., 2002)
    Family("lstm_coupled", lstm_variants.coupled, 3),    # coupled input-forget gate, f = 1 - i (Greff et al., 2017)
)}

# The scratch families (what ``LanguageModel(cell=...)`` accepts).
FAMILIES: dict[str, ModuleType | SimpleNamespace] = {n: f.module for n, f in REGISTRY.items() if f.module is not None}


def get(name: str) -> Family:
  try:
    return REGISTRY[name]
  except KeyError:
    raise ValueError(f"Unknown cell {name!r}; choose one of {sorted(REGISTRY)} "
                     f"(set it with --config.model.cell=NAME).") from None


def get_family(name: str) -> ModuleType:
  """The scratch math module of ``name``."""
  family = get(name)
  if family.module is None:
    raise ValueError(f"Cell {name!r} exists only as a library cell; use --config.model.implementation=flax, or "
                     f"a scratch cell: {sorted(FAMILIES)}.")
  return family.module


def init_layer_params(cell: str, key, input_size: int, hidden_size: int, init_scheme: str = "d2l",
                      forget_bias: float = 0.0) -> dict:
  """``init_params(key, input_size, hidden_size, init_scheme[, forget_bias])`` of ``cell``'s family; a forget bias
  for a family without a forget gate is an error naming the fix."""
  family = get_family(cell)
  if "forget_bias" in inspect.signature(family.init_params).parameters:
    return family.init_params(key, input_size, hidden_size, init_scheme, forget_bias=forget_bias)
  if forget_bias != 0.0:
    raise ValueError(f"model.forget_bias={forget_bias} needs a cell with a forget gate, not {cell!r}; "
                     f"set --config.model.forget_bias=0.")
  return family.init_params(key, input_size, hidden_size, init_scheme)


def stacked_zero_carry(cell: str, num_layers: int, batch_size: int, hidden_size: int, dtype=None) -> tuple:
  """One zero carry (``[batch_size, hidden_size]`` leaves) per stacked layer of ``cell``."""
  family = get_family(cell)
  kwargs = {} if dtype is None else {"dtype": dtype}
  return tuple(family.zero_carry(batch_size, hidden_size, **kwargs) for _ in range(num_layers))
