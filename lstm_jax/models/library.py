"""The library model (the book's "concise implementation"): the same language model built from Flax's own cells
under ``nn.RNN``.

``LibraryLanguageModel`` has the interface of ``lstm_jax.models.scratch.LanguageModel`` (``init``, ``apply``,
``zero_carry``), so the train loop, evaluator and generator use it unchanged. Cells: ``lstm`` -> ``nn.LSTMCell``
(or ``nn.OptimizedLSTMCell`` with ``optimized=True``), ``gru_reset_after`` / ``gru`` -> ``nn.GRUCell`` (Flax's GRU
applies the reset gate after the recurrent matmul), ``rnn`` -> ``nn.SimpleCell`` (tanh), ``rnn_relu`` ->
``nn.SimpleCell`` with ReLU (the default activation of Gluon's ``rnn.RNN``, which the MXNet books' library RNN
rows used; library model only). Parameters::

    {"layers": (flax cell params, ...), "head": {"W": [H, V], "b": [V]}}

``from_scratch_params`` converts a scratch model's params into this layout, so both can start from the same
weights and be compared step for step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstm_jax import cells
from lstm_jax.cells import initializers
from lstm_jax.interop import flax as flax_interop
from lstm_jax.models import regularizers


@dataclasses.dataclass(frozen=True)
class LibraryLanguageModel:
  vocab_size: int
  hidden_size: int = 256
  num_layers: int = 1
  cell: str = "lstm"
  optimized: bool = False       # lstm: nn.OptimizedLSTMCell instead of nn.LSTMCell
  init_scheme: str = "flax"     # flax: Flax's defaults | d2l: N(0, 0.01) weights (Gluon) | pytorch: U(+-1/sqrt(H))
  dropout: float = 0.0
  unroll: int = 1

  def _cell(self) -> nn.RNNCellBase:
    name = flax_cell_name(self.cell, self.optimized)
    if name == "SimpleCell":
      return nn.SimpleCell(features=self.hidden_size, activation_fn=getattr(nn, cells.get(self.cell).flax_activation))
    return getattr(nn, name)(features=self.hidden_size)

  def _rnn(self) -> nn.RNN:
    return nn.RNN(self._cell(), return_carry=True, unroll=self.unroll)

  def init(self, key: jax.Array) -> dict[str, Any]:
    keys = jax.random.split(key, self.num_layers + 1)
    layers, input_size = [], self.vocab_size
    for k in keys[:-1]:
      params = self._rnn().init(k, jnp.zeros((1, 1, input_size)))["params"]["cell"]
      params = self._redraw(k, params)
      layers.append(params)
      input_size = self.hidden_size
    kernel_init, bias_init = initializers.dense_initializers(self.init_scheme, self.hidden_size)
    k_w, k_b = jax.random.split(keys[-1])
    return {"layers": tuple(layers),
            "head": {"W": kernel_init(k_w, (self.hidden_size, self.vocab_size), jnp.float32),
                     "b": bias_init(k_b, (self.vocab_size,), jnp.float32)}}

  def _redraw(self, key: jax.Array, params: Any) -> Any:
    """The book's library inits over Flax's defaults: ``d2l`` (Gluon's ``init.Normal(0.01)`` on weights, zero
    biases), ``pytorch`` (``torch.nn``'s U(+-1/sqrt(H)) on every weight and bias); ``flax`` keeps Flax's own."""
    if self.init_scheme == "flax":
      return params
    if self.init_scheme not in ("d2l", "pytorch"):
      raise ValueError(f"Unknown init scheme {self.init_scheme!r} for the library model; choose flax, d2l or pytorch.")
    leaves, treedef = jax.tree.flatten_with_path(params)
    bound = 1.0 / self.hidden_size ** 0.5

    def draw(i, path, v):
      k = jax.random.fold_in(key, i)
      if self.init_scheme == "pytorch":
        return jax.random.uniform(k, v.shape, v.dtype, -bound, bound)
      return jnp.zeros_like(v) if path[-1].key == "bias" else 0.01 * jax.random.normal(k, v.shape, v.dtype)

    return jax.tree.unflatten(treedef, [draw(i, path, v) for i, (path, v) in enumerate(leaves)])

  def zero_carry(self, batch_size: int, dtype=jnp.float32):
    return tuple(self._cell().initialize_carry(jax.random.key(0), (batch_size, self.vocab_size if i == 0 else
                                                                    self.hidden_size))
                 for i in range(self.num_layers))

  def apply(self, params, tokens_BT: jax.Array, carry=None, *, dropout_rng: jax.Array | None = None,
            seq_lengths: jax.Array | None = None):
    """Tokens ``[B, T]`` -> ``(logits [B, T, V], carry per layer)``, one-hot inputs as in the book.

    ``seq_lengths [B]``: a padded batch (``nn.RNN``'s): the carry returned is each sequence's last valid one; the
    logits at padded steps are not defined (mask them out of any loss)."""
    if carry is None:
      carry = self.zero_carry(tokens_BT.shape[0])
    xs = jax.nn.one_hot(tokens_BT, self.vocab_size)
    new_carry = []
    for index, (layer_params, layer_carry) in enumerate(zip(params["layers"], carry)):
      if index > 0:
        xs = regularizers.between_layers(xs, self.dropout, dropout_rng, index)
      layer_carry, xs = self._rnn().apply({"params": {"cell": layer_params}}, xs, initial_carry=layer_carry,
                                          seq_lengths=seq_lengths)
      new_carry.append(layer_carry)
    return xs @ params["head"]["W"] + params["head"]["b"], tuple(new_carry)

  def recurrence_line(self, batch: int, steps: int) -> str | None:
    """None: this form runs one recurrence, chosen by nothing."""
    del batch, steps
    return None

  def recurrence_problem(self) -> str | None:
    """None: nothing in this form depends on the platform's kernels."""
    return None


def flax_cell_name(cell: str, optimized: bool = False) -> str:
  """The Flax cell class of a registry name (``gru`` takes the reset-after ``GRUCell``, the nearest library cell)."""
  name = cells.get("gru_reset_after" if cell == "gru" else cell).flax_cell
  library = sorted(n for n, f in cells.REGISTRY.items() if f.flax_cell) + ["gru"]
  if name is None:
    raise ValueError(f"No Flax library cell for {cell!r}; choose one of {sorted(library)}.")
  return "OptimizedLSTMCell" if name == "LSTMCell" and optimized else name


def from_scratch_params(cell: str, params: dict[str, Any]) -> dict[str, Any]:
  """A one-hot scratch ``LanguageModel``'s params -> this model's params (same function, Flax's layout)."""
  to_flax = flax_interop.TO_FLAX[flax_cell_name(cell)]
  return {"layers": tuple(to_flax(layer) for layer in params["layers"]), "head": params["head"]}
