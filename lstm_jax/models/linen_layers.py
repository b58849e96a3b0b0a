"""flax.linen forms of the scratch cells: the same math and the same parameter tree, inside Flax modules.

- ``RecurrentCell``: one time step, for ``flax.linen.RNN`` (or any loop). Its parameters are exactly the cell
  family's pytree, e.g. ``{"W_x": [in, 4H], "W_h": [H, 4H], "b": [4H]}`` for the LSTM, and its carry is the
  family's carry (``LSTMCarry(h, c)``). It projects the input inside every step, as ``nn.RNN`` requires.
- ``RecurrentLayer``: a whole sequence with the input projection hoisted out of the time loop (one matmul for all
  steps), batch-major by default, returning ``(carry, outputs)`` like ``nn.RNN(..., return_carry=True)``.

Both look their math up in ``lstm_jax.cells.REGISTRY`` by the ``cell`` name, so every family registered there
works, and both take the same parameter values as the scratch functions: ``variables["params"]`` of a bare
``RecurrentLayer`` (or ``variables["params"]["cell"]`` under ``nn.RNN``) can be passed to ``cells.lstm.layer``.

Initialisation calls the family's ``init_params`` with the scheme names of ``lstm_jax.cells.initializers``; each
entry is drawn under its own Flax RNG key, so values differ from ``init_params(key)`` but follow the same law.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstm_jax import cells
from lstm_jax.models import variable_length

Params = dict[str, jax.Array]


def _declare_params(module: nn.Module, input_size: int) -> Params:
  """Declares the family's parameter entries on ``module`` (its ``cell``, ``hidden_size``, ``init_scheme``,
  ``forget_bias`` attributes) and returns them as the family's plain dict."""
  def init_all(key: jax.Array) -> Params:
    return cells.init_layer_params(module.cell, key, input_size, module.hidden_size, module.init_scheme,
                                   module.forget_bias)

  names = jax.eval_shape(init_all, jax.random.key(0)).keys()
  return {name: module.param(name, lambda key, name=name: init_all(key)[name]) for name in names}


def _zero_carry(cell: str, batch_dims: tuple[int, ...], hidden_size: int, dtype) -> Any:
  """The family's zero carry with any number of leading batch dimensions."""
  carry = cells.get_family(cell).zero_carry(math.prod(batch_dims), hidden_size)
  return jax.tree.map(lambda leaf: leaf.reshape(batch_dims + leaf.shape[1:]).astype(dtype), carry)


class RecurrentCell(nn.RNNCellBase):
  """One step of a scratch cell family: ``(carry, x [..., in]) -> (carry, h [..., H])``.

  Use it as ``nn.RNN(RecurrentCell(hidden_size=H))``; its parameters live under ``params["cell"]`` there.
  """
  hidden_size: int
  cell: str = "lstm"          # a name in lstm_jax.cells.REGISTRY
  init_scheme: str = "d2l"    # see lstm_jax.cells.initializers
  forget_bias: float = 0.0    # added to the forget-gate bias at init (families with a forget gate only)
  carry_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, carry, x):
    params = _declare_params(self, x.shape[-1])
    return cells.get_family(self.cell).step(params, carry, x)

  @nn.nowrap
  def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]):
    """Zero carry for inputs of shape ``batch_dims + (in,)``; ``rng`` is unused (the carry is deterministic)."""
    del rng
    return _zero_carry(self.cell, tuple(input_shape[:-1]), self.hidden_size, self.carry_dtype)

  @property
  def num_feature_axes(self) -> int:
    return 1


class RecurrentLayer(nn.Module):
  """A whole recurrent layer with the hoisted input projection.

  ``xs``: ``[batch, time, in]`` (``[time, batch, in]`` when ``time_major``) -> ``(final carry, outputs)`` with
  outputs ``[batch, time, H]`` (or ``[time, batch, H]``). ``carry=None`` starts from zeros.
  """
  hidden_size: int
  cell: str = "lstm"
  init_scheme: str = "d2l"
  forget_bias: float = 0.0
  time_major: bool = False
  unroll: int = 1             # lax.scan unroll factor
  carry_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs: jax.Array, carry=None, seq_lengths: jax.Array | None = None):
    """``seq_lengths [batch]``: a batch padded at the end; padded steps output zeros and leave the carry as is."""
    if xs.ndim != 3:
      layout = "[time, batch, features]" if self.time_major else "[batch, time, features]"
      raise ValueError(f"RecurrentLayer expects inputs {layout}, got shape {xs.shape}; "
                       f"add the missing axis or set time_major to match your layout.")
    family = cells.get_family(self.cell)
    params = _declare_params(self, xs.shape[-1])
    xs_TBI = xs if self.time_major else jnp.swapaxes(xs, 0, 1)
    if carry is None:
      carry = _zero_carry(self.cell, (xs_TBI.shape[1],), self.hidden_size, self.carry_dtype)
    xproj_TBG = family.project_inputs(params, xs_TBI)
    carry, hs_TBH = variable_length.recurrence(family.recurrence, params, xproj_TBG, carry, seq_lengths,
                                               unroll=self.unroll)
    return carry, (hs_TBH if self.time_major else jnp.swapaxes(hs_TBH, 0, 1))

  @nn.nowrap
  def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]):
    """Zero carry for inputs of shape ``input_shape`` (3-d, in this layer's layout); ``rng`` is unused."""
    del rng
    batch_size = input_shape[1] if self.time_major else input_shape[0]
    return _zero_carry(self.cell, (batch_size,), self.hidden_size, self.carry_dtype)
