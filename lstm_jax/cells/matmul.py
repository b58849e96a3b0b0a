"""The cells' one matmul: operands in the weight's dtype, float32 accumulation and result.

With float32 weights (the default, the book's numerics) ``dot(x, w)`` is exactly ``x @ w``. With bfloat16 weights
(``model.matmul_dtype=bfloat16``: the language model casts ``W_x`` / ``W_h`` once per step) the activation is cast to
bfloat16 for the product only; accumulation, the result, the gates and the state stay float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MATMUL_DTYPES = ("float32", "bfloat16")


def dot(x: jax.Array, w: jax.Array) -> jax.Array:
  """``x [..., K] @ w [K, N]`` with ``w.dtype`` operands and a float32 ``[..., N]`` result."""
  if w.dtype == x.dtype:
    return x @ w
  return jnp.matmul(x.astype(w.dtype), w, preferred_element_type=jnp.float32)


def dot_as(x: jax.Array, y: jax.Array, dtype) -> jax.Array:
  """``x @ y`` with both operands in ``dtype`` (float32 accumulation), returned in ``dtype`` (a weight gradient must
  have its weight's dtype)."""
  if x.dtype == y.dtype == dtype:
    return x @ y
  return jnp.matmul(x.astype(dtype), y.astype(dtype), preferred_element_type=jnp.float32).astype(dtype)
