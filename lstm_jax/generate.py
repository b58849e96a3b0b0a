"""Text generation: warm the state up on a prefix, then decode inside one compiled ``lax.scan``.

As in the book's ``predict``: the state starts at zero, the prefix is fed token by token, and each following
token is chosen from the model's output and fed back. ``greedy`` takes the argmax; ``sample`` draws from
``softmax(logits / temperature)``, restricted to the ``top_k`` most likely tokens when ``top_k > 0``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax.data.vocab import Vocab
from lstm_jax.model import LanguageModel

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
                 method: str = "greedy", temperature: float = 1.0, top_k: int = 0) -> jax.Array:
  """Prefix ids ``[B, P]`` -> ``num_tokens`` generated ids ``[B, num_tokens]``, all in one compiled program."""
  logits_BPV, carry = model.apply(params, prefix_BP)

  def step(state, key):
    logits_BV, carry = state
    token_B = choose_next(logits_BV, key, method, temperature, top_k)
    logits_B1V, carry = model.apply(params, token_B[:, None], carry)
    return (logits_B1V[:, 0], carry), token_B

  _, tokens_NB = jax.lax.scan(step, (logits_BPV[:, -1], carry), jax.random.split(key, num_tokens))
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
