"""The language model in NNX form (``model.implementation=nnx``): the scratch ``LanguageModel`` built from
``lstm_jax.models.nnx_layers.RecurrentLayer`` modules, with the same functional interface (``init``, ``apply``,
``zero_carry``, ``dropout``), so the train loop, evaluator, generator and checkpoints use it unchanged.

``Network`` is the NNX module: one-hot inputs (layer 0's projection a row gather of ``W_x``, as in the scratch
model) or an ``nnx.Embed``, stacked time-major ``RecurrentLayer`` s, an ``nnx.Linear`` head, dropout between layers
when a dropout key is given (drawn as the scratch model draws it, so both make the same masks). ``NnxLanguageModel``
keeps only a static description; its params are the module's ``nnx.Param`` state as a plain pytree of arrays (the
pure dict of ``nnx.split``, with the layers as a tuple, the scratch model's convention)::

    {"embed": {"embedding": [V, E]}        (only when ``embed_dim`` is set),
     "layers": ({"W_x": [in, G*H], "W_h": [H, G*H], "b": [G*H]}, ...),   one family dict per layer
     "head": {"kernel": [H, V], "bias": [V]}}

and ``apply`` rebuilds the module from them with ``nnx.merge`` (its graphdef is built once per model, abstractly).
Nothing NNX-typed reaches a checkpoint. ``init(key)`` gives exactly the numbers of ``LanguageModel.init(key)``;
``from_scratch_params`` / ``to_scratch_params`` convert between the two layouts (a relabelling: the same arrays).

The recurrence is the family's ``lax.scan`` with autodiff (``recurrence=scan`` of the scratch model); float32 only.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lstm_jax import cells
from lstm_jax.cells import initializers
from lstm_jax.models import nnx_layers as nnx_cells
from lstm_jax.models import regularizers

Carry = tuple[Any, ...]  # one carry per layer


def _keyed(init, key: jax.Array):
  """An initializer that ignores the key NNX passes and uses ``key`` (the scratch model's key for that array)."""
  return lambda _, shape, dtype=jnp.float32: init(key, shape, dtype)


class Network(nnx.Module):
  """Tokens ``[B, T]`` (int) and a carry per layer -> ``(logits [B, T, V], final carry per layer)``."""

  def __init__(self, vocab_size: int, hidden_size: int, num_layers: int, *, cell: str = "lstm",
               embed_dim: int | None = None, init_scheme: str = "d2l", forget_bias: float = 0.0,
               dropout: float = 0.0, unroll: int = 1, rngs: nnx.Rngs | jax.Array | int):
    """Draws every parameter as ``LanguageModel.init`` does from the one key of ``rngs``."""
    keys = jax.random.split(nnx_cells.param_key(rngs), num_layers + 2)
    self.dropout = dropout
    input_size = vocab_size
    embed = None
    if embed_dim is not None:
      scale = 0.01 if init_scheme == "d2l" else 1.0
      normal = lambda key, shape, dtype=jnp.float32: jax.random.normal(key, shape) * scale  # noqa: E731
      embed = nnx.Embed(vocab_size, embed_dim, embedding_init=_keyed(normal, keys[-1]), rngs=nnx.Rngs(0))
      input_size = embed_dim
    self.embed = nnx.data(embed)
    layers = []
    for key in keys[:num_layers]:
      layers.append(nnx_cells.RecurrentLayer(input_size, hidden_size, cell=cell, init_scheme=init_scheme,
                                             forget_bias=forget_bias, time_major=True, unroll=unroll, rngs=key))
      input_size = hidden_size
    self.layers = nnx.List(layers)
    kernel_init, bias_init = initializers.dense_initializers(init_scheme, hidden_size)
    k_w, k_b = jax.random.split(keys[num_layers])
    self.head = nnx.Linear(hidden_size, vocab_size, kernel_init=_keyed(kernel_init, k_w),
                           bias_init=_keyed(bias_init, k_b), rngs=nnx.Rngs(0))

  def __call__(self, tokens_BT: jax.Array, carry: Carry, *, dropout_rng: jax.Array | None = None,
               seq_lengths: jax.Array | None = None) -> tuple[jax.Array, Carry]:
    """Dropout between layers only when ``dropout_rng`` is given; ``seq_lengths [B]`` as in ``LanguageModel``."""
    tokens_TB = tokens_BT.T
    new_carry, hs_TBH = [], None
    for index, (layer, layer_carry) in enumerate(zip(self.layers, carry)):
      if index == 0:
        xproj = layer.project_one_hot(tokens_TB) if self.embed is None else layer.project(self.embed(tokens_TB))
      else:
        inputs_TBI = regularizers.between_layers(hs_TBH, self.dropout, dropout_rng, index)
        xproj = layer.project(inputs_TBI)
      layer_carry, hs_TBH = layer.recur(xproj, layer_carry, seq_lengths)
      new_carry.append(layer_carry)
    return jnp.swapaxes(self.head(hs_TBH), 0, 1), tuple(new_carry)


def _plain(tree: Any) -> Any:
  """Nested mappings as plain dicts, with the ``layers`` mapping {0: ..., 1: ...} as a tuple."""
  if isinstance(tree, dict) or hasattr(tree, "items"):
    out = {key: _plain(value) for key, value in tree.items()}
    if "layers" in out:
      out["layers"] = tuple(out["layers"][index] for index in range(len(out["layers"])))
    return out
  return tree


def _nnx_layout(params: dict[str, Any]) -> dict[str, Any]:
  """The inverse of ``_plain`` at the top: the layers tuple as NNX's ``{index: layer}``."""
  return {**params, "layers": dict(enumerate(params["layers"]))}


@dataclasses.dataclass(frozen=True)
class NnxLanguageModel:
  """Static description of the model; ``init`` and ``apply`` are pure functions of params and inputs."""
  vocab_size: int
  hidden_size: int = 256
  num_layers: int = 1
  cell: str = "lstm"            # a name in lstm_jax.cells.REGISTRY with scratch math
  embed_dim: int | None = None  # None: one-hot inputs (D2L); an int: a learned nnx.Embed of that width
  init_scheme: str = "d2l"      # see lstm_jax.cells.initializers
  forget_bias: float = 0.0      # added to the forget-gate bias at init (cells with a forget gate)
  dropout: float = 0.0          # dropout rate between stacked layers (training only)
  unroll: int = 1               # lax.scan unroll factor

  def module(self, rngs: nnx.Rngs | jax.Array | int) -> Network:
    """A live ``Network`` with fresh parameters (the numbers of ``init`` for a raw key)."""
    return Network(self.vocab_size, self.hidden_size, self.num_layers, cell=self.cell, embed_dim=self.embed_dim,
                   init_scheme=self.init_scheme, forget_bias=self.forget_bias, dropout=self.dropout,
                   unroll=self.unroll, rngs=rngs)

  def init(self, key: jax.Array) -> dict[str, Any]:
    """Fresh params from ``key``: a plain pytree of arrays (see the module docstring)."""
    return self.params_of(self.module(key))

  def params_of(self, network: Network) -> dict[str, Any]:
    """A live module's parameters as this model's plain pytree."""
    graphdef, params, rest = nnx.split(network, nnx.Param, ...)
    if jax.tree.leaves(rest):
      raise ValueError(f"The network holds state other than nnx.Param ({rest}); it cannot be a plain param tree.")
    return _plain(nnx.to_pure_dict(params))

  def merge(self, params: dict[str, Any]) -> Network:
    """A live ``Network`` holding ``params`` (any arrays, tracers included), via ``nnx.merge``."""
    graphdef, abstract = _abstract_split(self)
    tree = _nnx_layout(params)
    if jax.tree.structure(tree) != jax.tree.structure(nnx.to_pure_dict(abstract)):
      raise ValueError(f"These params do not have this model's structure {jax.tree.map(jnp.shape, self.shapes())}; "
                       f"got {jax.tree.map(jnp.shape, params)}. Convert scratch params with from_scratch_params.")
    state = jax.tree.map(lambda leaf: leaf, abstract)  # a fresh copy: the cached abstract state stays untouched
    nnx.replace_by_pure_dict(state, tree)
    return nnx.merge(graphdef, state)

  def shapes(self) -> dict[str, Any]:
    """The params' structure as ``jax.ShapeDtypeStruct`` leaves."""
    return _plain(nnx.to_pure_dict(_abstract_split(self)[1]))

  def zero_carry(self, batch_size: int, dtype=jnp.float32) -> Carry:
    return cells.stacked_zero_carry(self.cell, self.num_layers, batch_size, self.hidden_size, dtype)

  def apply(self, params: dict[str, Any], tokens_BT: jax.Array, carry: Carry | None = None, *,
            dropout_rng: jax.Array | None = None, seq_lengths: jax.Array | None = None) -> tuple[jax.Array, Carry]:
    """Tokens ``[B, T]`` (int) -> ``(logits [B, T, V], final carry)``. Dropout only when ``dropout_rng`` is given.

    ``seq_lengths [B]``: a padded batch; the carry returned is each sequence's last valid one and the hidden
    states at padded steps are zero (their logits are the head's bias: mask them out of any loss).
    """
    if carry is None:
      carry = self.zero_carry(tokens_BT.shape[0])
    return self.merge(params)(tokens_BT, carry, dropout_rng=dropout_rng, seq_lengths=seq_lengths)

  def recurrence_line(self, batch: int, steps: int) -> str | None:
    """None: this form runs one recurrence, chosen by nothing."""
    del batch, steps
    return None

  def recurrence_problem(self) -> str | None:
    """None: nothing in this form depends on the platform's kernels."""
    return None


@functools.lru_cache(maxsize=64)
def _abstract_split(model: NnxLanguageModel):
  """``(graphdef, abstract Param state)`` of ``model``'s network, built once under ``nnx.eval_shape``."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: model.module(jax.random.key(0))), nnx.Param)
  return graphdef, state


def from_scratch_params(params: dict[str, Any]) -> dict[str, Any]:
  """A scratch ``LanguageModel``'s params -> this model's (the same arrays, relabelled)."""
  tree = {"layers": tuple(dict(layer) for layer in params["layers"]),
          "head": {"kernel": params["head"]["W"], "bias": params["head"]["b"]}}
  if "embed" in params:
    tree["embed"] = {"embedding": params["embed"]}
  return tree


def to_scratch_params(params: dict[str, Any]) -> dict[str, Any]:
  """This model's params -> a scratch ``LanguageModel``'s (the same arrays, relabelled)."""
  tree = {"layers": tuple(dict(layer) for layer in params["layers"]),
          "head": {"W": params["head"]["kernel"], "b": params["head"]["bias"]}}
  if "embed" in params:
    tree["embed"] = params["embed"]["embedding"]
  return tree
