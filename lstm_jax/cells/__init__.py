"""Recurrent cells written from scratch, one module per family, all with the same functional interface.

Every family module provides ``init_params(key, input_size, hidden_size, scheme, ...)`` returning
``{"W_x": [in, G*H], "W_h": [H, G*H], "b": [G*H], ...}``, ``zero_carry(batch, hidden)``,
``project_inputs(params, xs_TBI)`` and ``recurrence(params, xproj_TBG, carry, unroll)``.
The registry below maps the config's ``model.cell`` name to its module.
"""

from types import ModuleType, SimpleNamespace

from lstm_jax.cells import gru, lstm, lstm_variants, rnn

FAMILIES: dict[str, ModuleType | SimpleNamespace] = {
    "lstm": lstm,
    "gru": gru.reset_before,              # D2L's GRU: reset gate before the recurrent matmul
    "gru_reset_after": gru.reset_after,   # cuDNN's / flax.linen.GRUCell's form
    "rnn": rnn,                           # tanh RNN
    "lstm_peephole": lstm_variants.peephole,  # gates see the cell state (Gers et al., 2002)
    "lstm_coupled": lstm_variants.coupled,    # coupled input-forget gate, f = 1 - i (Greff et al., 2017)
}


def get_family(name: str) -> ModuleType:
  try:
    return FAMILIES[name]
  except KeyError:
    raise ValueError(f"Unknown cell {name!r}; choose one of {sorted(FAMILIES)} "
                     f"(set it with --config.model.cell=NAME).") from None
