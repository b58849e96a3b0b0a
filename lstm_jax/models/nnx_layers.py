"""flax.nnx forms of the scratch cells: the same math and the same parameters, inside NNX modules.

The NNX twins of ``lstm_jax.models.linen_layers``:

- ``RecurrentCell``: one time step, for ``flax.nnx.RNN`` (or any loop): ``cell(carry, x [..., in]) -> (carry,
  h [..., H])``, with ``initialize_carry(input_shape, rngs)`` and ``num_feature_axes`` as ``nnx.RNN`` asks. It
  projects the input inside every step, as ``nnx.RNN`` requires.
- ``RecurrentLayer``: a whole sequence with the input projection hoisted out of the time loop (one matmul for all
  steps), batch-major by default, returning ``(carry, outputs)`` like ``nnx.RNN(..., return_carry=True)``. Its
  recurrence is the family's ``lax.scan`` (autodiff), as in ``lstm_jax.models.linen_layers.RecurrentLayer``.

Both hold exactly the family's parameter entries as ``nnx.Param`` attributes of the same names, so
``nnx.to_pure_dict(nnx.state(module, nnx.Param))`` is the family's pytree (``{"W_x": [in, 4H], "W_h": [H, 4H],
"b": [4H]}`` for the LSTM; ``{"cell": ...}`` of it under ``nnx.RNN``) and ``module.params`` hands the current values
to the scratch functions (``cells.lstm.layer`` etc.). The carry is the family's (``LSTMCarry(h, c)`` for the LSTMs,
``h`` itself for the GRUs and the RNN). Every family of ``lstm_jax.cells.REGISTRY`` with scratch math works.

Initialisation is the family's ``init_params`` itself, called once: ``rngs`` is an ``nnx.Rngs`` (one key is drawn
from its ``params`` stream), a raw key or an int seed, and with a raw key ``key`` the values equal
``family.init_params(key, in, H, init_scheme, ...)`` exactly (the linen modules draw each entry under its own key).

Sizes follow the NNX cells' names (``in_features``, ``hidden_features``, as ``nnx.LSTMCell(in, H, rngs=...)``): NNX
modules are built eagerly, so the input size is an argument rather than inferred from the first call.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lstm_jax import cells
from lstm_jax.models import variable_length

Params = dict[str, jax.Array]


def param_key(rngs: nnx.Rngs | jax.Array | int) -> jax.Array:
  """The one key a module's ``init_params`` uses: ``rngs.params()`` of an ``nnx.Rngs``, a raw key as given, or
  ``jax.random.key(seed)`` of an int."""
  if isinstance(rngs, nnx.Rngs):
    return rngs.params()
  if isinstance(rngs, int):
    return jax.random.key(rngs)
  return rngs


def _zero_carry(cell: str, batch_dims: tuple[int, ...], hidden_features: int, dtype) -> Any:
  """The family's zero carry with any number of leading batch dimensions."""
  carry = cells.get_family(cell).zero_carry(math.prod(batch_dims), hidden_features)
  return jax.tree.map(lambda leaf: leaf.reshape(batch_dims + leaf.shape[1:]).astype(dtype), carry)


class _FamilyParams:
  """Declares a family's parameters as ``nnx.Param`` attributes and reads them back as the family's dict."""

  def _declare_params(self, cell: str, in_features: int, hidden_features: int, init_scheme: str,
                      forget_bias: float, rngs) -> None:
    self.cell = cell
    self.in_features = in_features
    self.hidden_features = hidden_features
    self.init_scheme = init_scheme
    self.forget_bias = forget_bias
    values = cells.init_layer_params(cell, param_key(rngs), in_features, hidden_features, init_scheme, forget_bias)
    self.param_names = tuple(values)
    for name, value in values.items():
      setattr(self, name, nnx.Param(value))

  @property
  def family(self):
    return cells.get_family(self.cell)

  @property
  def params(self) -> Params:
    """The current values as the family's plain dict (what the scratch functions take)."""
    return {name: getattr(self, name)[...] for name in self.param_names}


class RecurrentCell(_FamilyParams, nnx.RNNCellBase):
  """One step of a scratch cell family: ``(carry, x [..., in]) -> (carry, h [..., H])``.

  Use it as ``nnx.RNN(RecurrentCell(in, H, rngs=...))``; its parameters live under ``cell`` there.
  """

  def __init__(self, in_features: int, hidden_features: int, *, cell: str = "lstm", init_scheme: str = "d2l",
               forget_bias: float = 0.0, carry_dtype: Any = jnp.float32, rngs: nnx.Rngs | jax.Array | int):
    """``cell``: a name in ``lstm_jax.cells.REGISTRY``; ``init_scheme``: see ``lstm_jax.cells.initializers``;
    ``forget_bias``: added to the forget-gate bias at init (families with a forget gate only)."""
    self._declare_params(cell, in_features, hidden_features, init_scheme, forget_bias, rngs)
    self.carry_dtype = carry_dtype

  def __call__(self, carry, x: jax.Array):
    return self.family.step(self.params, carry, x)

  def initialize_carry(self, input_shape: tuple[int, ...], rngs: nnx.Rngs | nnx.RngStream | None = None,
                       carry_init: Any = None):
    """Zero carry for inputs of shape ``batch_dims + (in,)``; ``rngs`` is unused (the carry is deterministic)."""
    del rngs
    if carry_init is not None:
      raise ValueError("RecurrentCell's carry starts at zeros; pass another start as nnx.RNN's initial_carry "
                       "instead of carry_init.")
    return _zero_carry(self.cell, tuple(input_shape[:-1]), self.hidden_features, self.carry_dtype)

  @property
  def num_feature_axes(self) -> int:
    return 1


class RecurrentLayer(_FamilyParams, nnx.Module):
  """A whole recurrent layer with the hoisted input projection.

  ``xs``: ``[batch, time, in]`` (``[time, batch, in]`` when ``time_major``) -> ``(final carry, outputs)`` with
  outputs ``[batch, time, H]`` (or ``[time, batch, H]``). ``carry=None`` starts from zeros. ``project`` /
  ``project_one_hot`` and ``recur`` are its two halves, for callers that project their inputs another way.
  """

  def __init__(self, in_features: int, hidden_features: int, *, cell: str = "lstm", init_scheme: str = "d2l",
               forget_bias: float = 0.0, time_major: bool = False, unroll: int = 1, carry_dtype: Any = jnp.float32,
               rngs: nnx.Rngs | jax.Array | int):
    """As ``RecurrentCell``, plus ``time_major`` (the layout of inputs and outputs) and ``unroll`` (the
    ``lax.scan`` unroll factor)."""
    self._declare_params(cell, in_features, hidden_features, init_scheme, forget_bias, rngs)
    self.time_major = time_major
    self.unroll = unroll
    self.carry_dtype = carry_dtype

  def __call__(self, xs: jax.Array, carry=None, seq_lengths: jax.Array | None = None):
    """``seq_lengths [batch]``: a batch padded at the end; padded steps output zeros and leave the carry as is."""
    if xs.ndim != 3:
      layout = "[time, batch, features]" if self.time_major else "[batch, time, features]"
      raise ValueError(f"RecurrentLayer expects inputs {layout}, got shape {xs.shape}; "
                       f"add the missing axis or set time_major to match your layout.")
    if xs.shape[-1] != self.in_features:
      raise ValueError(f"RecurrentLayer was built for {self.in_features} input features (W_x "
                       f"{tuple(self.W_x.shape)}), got inputs of shape {xs.shape}.")
    return self.recur(self.project(xs), carry, seq_lengths)

  def project(self, xs: jax.Array) -> jax.Array:
    """The hoisted input projection ``[..., in] -> [..., G*H]`` (bias included), one matmul for all steps."""
    return self.family.project_inputs(self.params, xs)

  def project_one_hot(self, tokens: jax.Array) -> jax.Array:
    """``project(one_hot(tokens))`` without the one-hot: a row gather of ``W_x``, ``[...] -> [..., G*H]``."""
    return self.W_x[...][tokens] + self.b[...]

  def recur(self, xproj: jax.Array, carry=None, seq_lengths: jax.Array | None = None):
    """The recurrence over projected inputs ``[batch, time, G*H]`` (``[time, batch, G*H]`` when ``time_major``)
    -> ``(final carry, outputs)``."""
    xproj_TBG = xproj if self.time_major else jnp.swapaxes(xproj, 0, 1)
    if carry is None:
      carry = _zero_carry(self.cell, (xproj_TBG.shape[1],), self.hidden_features, self.carry_dtype)
    params, family = self.params, self.family
    carry, hs_TBH = variable_length.recurrence(family.recurrence, params, xproj_TBG, carry, seq_lengths,
                                               unroll=self.unroll)
    return carry, (hs_TBH if self.time_major else jnp.swapaxes(hs_TBH, 0, 1))

  def initialize_carry(self, input_shape: tuple[int, ...], rngs: nnx.Rngs | nnx.RngStream | None = None):
    """Zero carry for inputs of shape ``input_shape`` (3-d, in this layer's layout); ``rngs`` is unused."""
    del rngs
    batch_size = input_shape[1] if self.time_major else input_shape[0]
    return _zero_carry(self.cell, (batch_size,), self.hidden_features, self.carry_dtype)
