"""The perplexity evaluator: exp of the token-mean cross-entropy over a split, with bits per token and a standard
error, computed by a jitted pass that carries the recurrent state along contiguous rows of the split."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax.data import batching
from lstm_jax.models.scratch import LanguageModel
from lstm_jax.train import loss as loss_lib


@dataclasses.dataclass(frozen=True)
class Evaluation:
  mean_nll: float       # nats per token
  stderr_nll: float     # standard error of the mean NLL (tokens treated as independent)
  num_tokens: int
  batch_perplexity_mean: float | None = None  # mean over batches of exp(batch token-mean NLL) (d2l 1.x's board)

  @property
  def perplexity(self) -> float:
    return loss_lib.perplexity(self.mean_nll)

  @property
  def bits_per_token(self) -> float:
    return loss_lib.bits_per_token(self.mean_nll)

  def as_dict(self, prefix: str = "") -> dict[str, float]:
    values = {f"{prefix}perplexity": self.perplexity, f"{prefix}bits_per_token": self.bits_per_token,
              f"{prefix}nll": self.mean_nll, f"{prefix}nll_stderr": self.stderr_nll,
              f"{prefix}tokens": self.num_tokens}
    if self.batch_perplexity_mean is not None:
      values[f"{prefix}batch_perplexity_mean"] = self.batch_perplexity_mean
    return values


@functools.partial(jax.jit, static_argnums=0)
def _chunk_sums(model: LanguageModel, params: Any, inputs_BT, targets_BT, carry):
  logits, carry = model.apply(params, inputs_BT, carry)
  nll = loss_lib.token_nll(logits, targets_BT)
  return jnp.sum(nll), jnp.sum(nll * nll), carry


def evaluate_batches(model: LanguageModel, params: Any, batches: Sequence[batching.Batch],
                     carry_state: bool) -> Evaluation:
  """Token-mean NLL over ``batches``; with ``carry_state`` the carry flows from each batch into the next."""
  total = jnp.zeros(()), jnp.zeros(())
  count = 0
  carry = None
  batch_sums, batch_counts = [], []
  for inputs, targets in batches:
    if not carry_state or carry is None or jax.tree.leaves(carry)[0].shape[0] != inputs.shape[0]:
      carry = model.zero_carry(inputs.shape[0])
    nll_sum, sq_sum, carry = _chunk_sums(model, params, inputs, targets, carry)
    total = total[0] + nll_sum, total[1] + sq_sum
    count += targets.size
    batch_sums.append(nll_sum)
    batch_counts.append(targets.size)
  if count == 0:
    raise ValueError("Nothing to evaluate: the split holds fewer than two tokens.")
  nll_sum, sq_sum = (float(x) for x in total)
  mean = nll_sum / count
  variance = max(sq_sum / count - mean * mean, 0.0)
  return Evaluation(mean_nll=mean, stderr_nll=math.sqrt(variance / count), num_tokens=count,
                    batch_perplexity_mean=batch_perplexity_mean(batch_sums, batch_counts))


def batch_perplexity_mean(nll_sums: Sequence[Any], token_counts: Sequence[int]) -> float:
  """Mean over minibatches of ``exp(sum / count)``: d2l 1.x plots and averages per-batch perplexities, unweighted
  (its last, smaller batch counts as much as the others), which reads higher than exp of the token-mean NLL."""
  return float(np.mean(np.exp(np.asarray(jax.device_get(nll_sums), np.float64) / np.asarray(token_counts))))


def evaluate_ids(model: LanguageModel, params: Any, ids: np.ndarray, batch_size: int = 32,
                 num_steps: int = 35) -> Evaluation:
  """Perplexity of a token stream ``[n]``: every target once, the state carried along ``batch_size`` rows."""
  return evaluate_batches(model, params, batching.evaluation_batches(ids, batch_size, num_steps), carry_state=True)


@functools.partial(jax.jit, static_argnums=0)
def _padded_sums(model: LanguageModel, params: Any, inputs_BT, targets_BT, seq_lengths_B):
  logits, _ = model.apply(params, inputs_BT, seq_lengths=seq_lengths_B)
  valid_BT = loss_lib.valid_mask(seq_lengths_B, targets_BT.shape[1])
  nll = jnp.where(valid_BT, loss_lib.token_nll(logits, targets_BT), 0.0)
  return jnp.sum(nll), jnp.sum(nll * nll), jnp.sum(valid_BT)


def evaluate_padded(model: LanguageModel, params: Any, inputs_BT, targets_BT, seq_lengths_B) -> Evaluation:
  """Token-mean NLL of a padded batch of independent sequences ``[B, T]`` (each from a zero state); the steps
  at and after ``seq_lengths [B]`` are ignored."""
  nll_sum, sq_sum, count = (float(x) for x in _padded_sums(model, params, jnp.asarray(inputs_BT),
                                                           jnp.asarray(targets_BT), jnp.asarray(seq_lengths_B)))
  if count == 0:
    raise ValueError("Nothing to evaluate: every sequence length is 0.")
  mean = nll_sum / count
  variance = max(sq_sum / count - mean * mean, 0.0)
  return Evaluation(mean_nll=mean, stderr_nll=math.sqrt(variance / count), num_tokens=int(count))
