"""Cross-entropy and the quantities derived from it (perplexity, bits per token)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax


def token_nll(logits_BTV: jax.Array, targets_BT: jax.Array) -> jax.Array:
  """Per-token negative log-likelihood in nats, ``[B, T]``."""
  return optax.softmax_cross_entropy_with_integer_labels(logits_BTV.astype(jnp.float32), targets_BT)


def valid_mask(seq_lengths_B: jax.Array, num_steps: int) -> jax.Array:
  """``[B, T]`` bool, True at the steps before each sequence's length (batch-major)."""
  return jnp.arange(num_steps)[None, :] < jnp.asarray(seq_lengths_B)[:, None]


def masked_nll_sum(logits_BTV: jax.Array, targets_BT: jax.Array,
                   seq_lengths_B: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(NLL summed over the valid tokens, number of valid tokens)`` of a batch padded after ``seq_lengths [B]``;
  the padded positions contribute nothing, whatever their logits and targets."""
  valid_BT = valid_mask(seq_lengths_B, targets_BT.shape[1])
  return jnp.sum(jnp.where(valid_BT, token_nll(logits_BTV, targets_BT), 0.0)), jnp.sum(valid_BT)


def perplexity(mean_nll: float) -> float:
  """exp of the token-mean NLL (nats); ``inf`` past float range instead of an overflow error."""
  return math.exp(mean_nll) if mean_nll < 700 else math.inf


def bits_per_token(mean_nll: float) -> float:
  return mean_nll / math.log(2.0)
