"""Dropout, written once for every form of the model. Each function is the identity when its rate is 0 or no key
is given (evaluation and generation pass none), and rescales what it keeps by ``1 / (1 - rate)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """Elementwise dropout of ``x`` (any shape): a fresh draw per element."""
  if rng is None or rate <= 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


def between_layers(inputs: jax.Array, rate: float, rng: jax.Array | None, layer: int) -> jax.Array:
  """Dropout on the inputs of stacked layer ``layer`` (>= 1), the key folded with the layer index (the scratch and
  NNX models pass ``[T, B, I]`` and so draw the same masks from one key; the library model ``[B, T, I]``)."""
  return dropout(inputs, rate, None if rng is None else jax.random.fold_in(rng, layer))
