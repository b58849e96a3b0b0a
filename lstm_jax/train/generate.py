"""Text generation: warm the state up on a prefix, then decode inside one compiled ``lax.scan``.

As in the book's ``predict``: the state starts at zero, the prefix is fed token by token, and each following
token is chosen from the model's output and fed back. ``greedy`` takes the argmax; ``sample`` draws from
``softmax(logits / temperature)``, restricted to the ``top_k`` most likely tokens when ``top_k > 0``.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax.data.vocab import Vocab
from lstm_jax.models.scratch import LanguageModel

METHODS = ("greedy", "sample")


def choose_next(logits_BV: jax.Array, key: jax.Array, method: str, temperature: float, top_k: int) -> jax.Array:
  """Next token ids ``[B]`` from logits ``[B, V]``."""
  if method == "greedy":
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  if method == "sample":
    logits = logits_BV / temperature
    if top_k > 0:
      kth_largest = jax.lax.top_k(logits, top_k)[0][:, -1:]
      logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
  raise ValueError(f"Unknown generation method {method!r}; choose one of {METHODS}.")


@functools.partial(jax.jit, static_argnames=("model", "num_tokens", "method", "top_k"))
def generate_ids(model: LanguageModel, params: Any, prefix_BP: jax.Array, key: jax.Array, *, num_tokens: int,
                 method: str = "greedy", temperature: float = 1.0, top_k: int = 0,
                 prefix_lengths: jax.Array | None = None) -> jax.Array:
  """Prefix ids ``[B, P]`` -> ``num_tokens`` generated ids ``[B, num_tokens]``, all in one compiled program.

  ``prefix_lengths [B]``: prefixes of different lengths, padded at the end to ``P``; each row continues from its
  own last valid token (scratch models only).
  """
  if prefix_lengths is None:
    logits_BPV, carry = model.apply(params, prefix_BP)
    last_logits_BV = logits_BPV[:, -1]
  else:
    logits_BPV, carry = model.apply(params, prefix_BP, seq_lengths=prefix_lengths)
    last_logits_BV = jnp.take_along_axis(logits_BPV, (jnp.asarray(prefix_lengths) - 1)[:, None, None], axis=1)[:, 0]

  def step(state, key):
    logits_BV, carry = state
    token_B = choose_next(logits_BV, key, method, temperature, top_k)
    logits_B1V, carry = model.apply(params, token_B[:, None], carry)
    return (logits_B1V[:, 0], carry), token_B

  _, tokens_NB = jax.lax.scan(step, (last_logits_BV, carry), jax.random.split(key, num_tokens))
  return tokens_NB.T


def generate_text(model: LanguageModel, params: Any, vocab: Vocab, prefix: str, num_tokens: int, *,
                  method: str = "greedy", temperature: float = 1.0, top_k: int = 0, seed: int = 0) -> str:
  """The prefix followed by ``num_tokens`` generated tokens, as text."""
  tokens = list(prefix) if vocab.separator == "" else prefix.split(vocab.separator)
  prefix_ids = vocab.encode(tokens)[None, :]
  ids = generate_ids(model, params, jnp.asarray(prefix_ids), jax.random.key(seed), num_tokens=num_tokens,
                     method=method, temperature=temperature, top_k=top_k)
  return prefix + vocab.separator + vocab.decode(np.asarray(ids[0])) if vocab.separator else \
      prefix + vocab.decode(np.asarray(ids[0]))


def generate_texts(model: LanguageModel, params: Any, vocab: Vocab, prefixes: Sequence[str], num_tokens: int, *,
                   method: str = "greedy", temperature: float = 1.0, top_k: int = 0, seed: int = 0) -> list[str]:
  """Several prefixes (any lengths) continued together as one batch: one compiled program for all of them."""
  token_lists = [list(p) if vocab.separator == "" else p.split(vocab.separator) for p in prefixes]
  if not prefixes or min(len(t) for t in token_lists) == 0:
    raise ValueError("Every prefix needs at least one token; pass non-empty prefixes.")
  width = max(len(t) for t in token_lists)
  ids_BP = np.zeros((len(prefixes), width), np.int32)
  for row, tokens in enumerate(token_lists):
    ids_BP[row, :len(tokens)] = vocab.encode(tokens)
  lengths = np.asarray([len(t) for t in token_lists], np.int32)
  ids = np.asarray(generate_ids(model, params, jnp.asarray(ids_BP), jax.random.key(seed), num_tokens=num_tokens,
                                method=method, temperature=temperature, top_k=top_k,
                                prefix_lengths=jnp.asarray(lengths)))
  return [prefix + vocab.separator + vocab.decode(row) if vocab.separator else prefix + vocab.decode(row)
          for prefix, row in zip(prefixes, ids)]
