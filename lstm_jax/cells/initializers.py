"""Weight-initialisation schemes shared by every cell family.

A scheme is a name; ``layer_initializers(scheme, hidden_size)`` returns the three initialisers
(input kernel, recurrent kernel, bias) that a cell applies to its fused ``[in, G*H]`` / ``[H, G*H]`` / ``[G*H]``
parameters, where ``G`` is the number of gate blocks (4 for the LSTM).

- ``d2l``:     N(0, 0.01^2) kernels, zero biases (every edition of *Dive into Deep Learning*).
- ``pytorch``: U(-1/sqrt(H), 1/sqrt(H)) for kernels and bias (``torch.nn.LSTM``'s default).
- ``flax``:    lecun-normal input kernel, orthogonal recurrent kernel per gate block, zero bias (``flax.linen.LSTMCell``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]

SCHEMES = ("d2l", "pytorch", "flax")


def _normal(stddev: float) -> Initializer:
  return jax.nn.initializers.normal(stddev)


def _uniform(bound: float) -> Initializer:
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def _per_gate_block(block_init: Initializer) -> Initializer:
  """Applies ``block_init`` to each ``[rows, H]`` gate block of a fused ``[rows, G*H]`` kernel separately."""
  def init(key, shape, dtype=jnp.float32):
    rows, fused = shape
    num_blocks = fused // rows if fused % rows == 0 else 1
    width = fused // num_blocks
    keys = jax.random.split(key, num_blocks)
    return jnp.concatenate([block_init(k, (rows, width), dtype) for k in keys], axis=1)
  return init


def layer_initializers(scheme: str, hidden_size: int) -> tuple[Initializer, Initializer, Initializer]:
  """Returns ``(input_kernel_init, recurrent_kernel_init, bias_init)`` for a named scheme."""
  if scheme == "d2l":
    return _normal(0.01), _normal(0.01), jax.nn.initializers.zeros
  if scheme == "pytorch":
    bound = 1.0 / hidden_size ** 0.5
    return _uniform(bound), _uniform(bound), _uniform(bound)
  if scheme == "flax":
    return (jax.nn.initializers.lecun_normal(), _per_gate_block(jax.nn.initializers.orthogonal()),
            jax.nn.initializers.zeros)
  raise ValueError(f"Unknown init scheme {scheme!r}; choose one of {SCHEMES}.")


def dense_initializers(scheme: str, fan_in: int) -> tuple[Initializer, Initializer]:
  """Returns ``(kernel_init, bias_init)`` for the output layer under the same scheme names."""
  if scheme == "d2l":
    return _normal(0.01), jax.nn.initializers.zeros
  if scheme == "pytorch":
    bound = 1.0 / fan_in ** 0.5
    return _uniform(bound), _uniform(bound)
  if scheme == "flax":
    return jax.nn.initializers.lecun_normal(), jax.nn.initializers.zeros
  raise ValueError(f"Unknown init scheme {scheme!r}; choose one of {SCHEMES}.")
