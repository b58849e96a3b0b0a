"""Cross-entropy and the quantities derived from it (perplexity, bits per token)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax


def token_nll(logits_BTV: jax.Array, targets_BT: jax.Array) -> jax.Array:
  """Per-token negative log-likelihood in nats, ``[B, T]``."""
  return optax.softmax_cross_entropy_with_integer_labels(logits_BTV.astype(jnp.float32), targets_BT)


def perplexity(mean_nll: float) -> float:
  """exp of the token-mean NLL (nats); ``inf`` past float range instead of an overflow error."""
  return math.exp(mean_nll) if mean_nll < 700 else math.inf


def bits_per_token(mean_nll: float) -> float:
  return mean_nll / math.log(2.0)
