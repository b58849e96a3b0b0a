"""Recurrent cells written from scratch, one module per family, all with the same functional interface.

Every family module provides ``init_params(key, input_size, hidden_size, scheme, ...)`` returning
``{"W_x": [in, G*H], "W_h": [H, G*H], "b": [G*H], ...}``, ``zero_carry(batch, hidden)``,
``project_inputs(params, xs_TBI)`` and ``recurrence(params, xproj_TBG, carry, unroll)``.
The registry below maps the config's ``model.cell`` name to its module.
"""

from types import ModuleType

from lstm_jax.cells import lstm

FAMILIES: dict[str, ModuleType] = {"lstm": lstm}


def get_family(name: str) -> ModuleType:
  try:
    return FAMILIES[name]
  except KeyError:
    raise ValueError(f"Unknown cell {name!r}; choose one of {sorted(FAMILIES)} "
                     f"(set it with --config.model.cell=NAME).") from None
