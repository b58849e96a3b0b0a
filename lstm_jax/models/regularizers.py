"""Dropout in its forms, written once for every form of the model, and the activation penalties.

Each mask is drawn from the minibatch's dropout key (``TrainState.rng`` folded with the step: fresh per minibatch,
the same whatever the recurrence) folded with a tag per kind and the layer index. Every function is the identity
when its rate is 0 or no key is given (evaluation and generation pass none) and rescales what it keeps by
``1 / (1 - rate)``.

- ``between_layers``: elementwise dropout on a stacked layer's inputs (``model.dropout``).
- ``drop_connect``: DropConnect on a weight matrix, one mask per minibatch (``model.weight_drop`` on ``W_h``:
  AWD-LSTM's weight drop; the recurrence, kernels included, runs unchanged on the masked matrix).
- ``locked``: one mask per sequence, the same at every time step (``model.locked_dropout``; Gal & Ghahramani's
  variational dropout on a layer's inputs and outputs).
- ``embedding_rows``: whole rows of the embedding dropped (``model.embedding_dropout``: a dropped token type is
  zero wherever it occurs in the minibatch).
- ``variational_recurrence``: a mask per sequence on ``h`` where it enters the recurrent matmul
  (``model.recurrent_dropout``): the fused recurrences take the mask themselves; for the others, a scan around any
  cell whose state ``h`` is read only by that matmul.
- ``activation_penalty``: AR and TAR (Merity et al., 2017) on the top layer's outputs.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

# Tags folded into the dropout key, one per kind of mask (``between_layers`` folds the layer index alone).
WEIGHT_DROP, LOCKED, EMBEDDING, RECURRENT = 1001, 1002, 1003, 1004
# The cells whose recurrent state ``h`` is read only by ``h @ W_h`` (so masking it there is the variational
# recurrent dropout); GRUs also interpolate with ``h``.
RECURRENT_DROPOUT_CELLS = ("lstm", "lstm_peephole", "lstm_coupled", "rnn")


def key_for(rng: jax.Array | None, tag: int, layer: int = 0) -> jax.Array | None:
  """The key of mask kind ``tag`` at ``layer`` (None without a dropout key)."""
  return None if rng is None else jax.random.fold_in(jax.random.fold_in(rng, tag), layer)


def _scaled(x: jax.Array, rate: float, rng: jax.Array, mask_shape: tuple[int, ...]) -> jax.Array:
  keep = jax.random.bernoulli(rng, 1.0 - rate, mask_shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """Elementwise dropout of ``x`` (any shape): a fresh draw per element."""
  if rng is None or rate <= 0.0:
    return x
  return _scaled(x, rate, rng, x.shape)


def between_layers(inputs: jax.Array, rate: float, rng: jax.Array | None, layer: int) -> jax.Array:
  """Dropout on the inputs of stacked layer ``layer`` (>= 1), the key folded with the layer index (the scratch and
  NNX models pass ``[T, B, I]`` and so draw the same masks from one key; the library model ``[B, T, I]``)."""
  return dropout(inputs, rate, None if rng is None else jax.random.fold_in(rng, layer))


def drop_connect(weight: jax.Array, rate: float, rng: jax.Array | None, layer: int) -> jax.Array:
  """DropConnect: ``weight`` (e.g. ``W_h [H, G*H]``) with each entry dropped, one mask per minibatch."""
  if rng is None or rate <= 0.0:
    return weight
  return _scaled(weight, rate, key_for(rng, WEIGHT_DROP, layer), weight.shape)


def locked(x_TBI: jax.Array, rate: float, rng: jax.Array | None, layer: int) -> jax.Array:
  """Locked dropout of time-major ``[T, B, I]``: one ``[B, I]`` mask per sequence, the same at every step.
  ``layer`` numbers the place (0 .. num_layers: the inputs of layer k, num_layers: the top layer's outputs)."""
  if rng is None or rate <= 0.0:
    return x_TBI
  return _scaled(x_TBI, rate, key_for(rng, LOCKED, layer), (1,) + x_TBI.shape[1:])


def embedding_rows(embed_VE: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """The embedding ``[V, E]`` with whole rows (token types) dropped, one mask per minibatch."""
  if rng is None or rate <= 0.0:
    return embed_VE
  return _scaled(embed_VE, rate, key_for(rng, EMBEDDING), (embed_VE.shape[0], 1))


def recurrent_mask(rate: float, rng: jax.Array | None, layer: int, batch: int, hidden: int,
                   dtype=jnp.float32) -> jax.Array | None:
  """The ``[B, H]`` mask (kept entries ``1 / (1 - rate)``, dropped 0) of ``variational_recurrence``; None when off."""
  if rng is None or rate <= 0.0:
    return None
  return _scaled(jnp.ones((batch, hidden), dtype), rate, key_for(rng, RECURRENT, layer), (batch, hidden))


def _mask_h(carry: Any, mask_BH: jax.Array) -> Any:
  """The carry with its ``h`` multiplied by the mask (an LSTM carry's ``h``, or the carry itself for the RNN)."""
  return carry._replace(h=carry.h * mask_BH) if hasattr(carry, "_replace") else carry * mask_BH


def variational_recurrence(recurrence: Callable, mask_BH: jax.Array) -> Callable:
  """``recurrence(params, xproj [T, B, G], carry, unroll)`` with ``h`` masked where the next step reads it: one
  step of the cell's own recurrence per time step, fed the masked state; the hidden states returned are unmasked."""

  def run(params, xproj_TBG: jax.Array, carry, unroll: int = 1):
    def step(carry, xproj_BG):
      carry, hs_1BH = recurrence(params, xproj_BG[None], _mask_h(carry, mask_BH))
      return carry, hs_1BH[0]

    return jax.lax.scan(step, carry, xproj_TBG, unroll=unroll)

  return run


def activation_penalty(ar: float, tar: float, dropped_TBH: jax.Array, raw_TBH: jax.Array) -> jax.Array:
  """``ar * mean(dropped^2) + tar * mean((h_t - h_{t-1})^2)`` over the top layer's outputs ``[T, B, H]``:
  AR on the outputs after dropout, TAR on those before (as AWD-LSTM)."""
  penalty = jnp.zeros((), jnp.float32)
  if ar > 0.0:
    penalty += ar * jnp.mean(jnp.square(dropped_TBH.astype(jnp.float32)))
  if tar > 0.0:
    penalty += tar * jnp.mean(jnp.square((raw_TBH[1:] - raw_TBH[:-1]).astype(jnp.float32)))
  return penalty


# The regularizer fields of ``config.model`` (all off by default) and their ranges.
OPTIONS = ("weight_drop", "locked_dropout", "embedding_dropout", "recurrent_dropout", "tie_weights", "ar", "tar")
RATES = ("weight_drop", "locked_dropout", "embedding_dropout", "recurrent_dropout")


def problems(settings: dict[str, Any], implementation: str = "scratch") -> list[str]:
  """One line per regularizer setting of a ``config.model`` section (as a dict) that cannot be honoured, naming
  the fix; empty when every option is off or can run."""
  on = [name for name in OPTIONS if settings.get(name)]
  if not on:
    return []
  if implementation != "scratch":
    return [f"--config.model.{on[0]}: the regularizer options ({', '.join(on)}) run in the scratch model only, "
            f"not model.implementation={implementation}; set --config.model.implementation=scratch."]
  found = []
  for name in RATES:
    rate = settings.get(name, 0.0)
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0.0 <= rate < 1.0:
      found.append(f"--config.model.{name}={rate!r}: must be a number in [0, 1); set it accordingly.")
  for name in ("ar", "tar"):
    value = settings.get(name, 0.0)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0.0:
      found.append(f"--config.model.{name}={value!r}: must be a number >= 0; set it accordingly.")
  embed_dim = settings.get("embed_dim")
  for name in ("embedding_dropout", "tie_weights"):
    if settings.get(name) and embed_dim is None:
      found.append(f"--config.model.{name} needs a learned embedding (one-hot inputs have none); set "
                   f"--config.model.embed_dim=N.")
  if settings.get("recurrent_dropout"):
    cell, recurrence = settings.get("cell", "lstm"), settings.get("recurrence", "auto")
    if cell not in RECURRENT_DROPOUT_CELLS:
      found.append(f"--config.model.recurrent_dropout runs for cells {list(RECURRENT_DROPOUT_CELLS)}, not {cell!r} "
                   f"(a GRU also interpolates with h); use --config.model.weight_drop instead.")
    if recurrence not in ("auto", "scan", "fused_vjp"):
      found.append(f"--config.model.recurrent_dropout runs with recurrence=scan or fused_vjp (a mask per sequence "
                   f"inside the step; the kernels have none), not {recurrence}; set --config.model.recurrence="
                   f"fused_vjp (or auto), or use --config.model.weight_drop, which every recurrence runs.")
  return found
