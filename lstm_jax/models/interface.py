"""What every form of the language model provides (``scratch``, ``library``, ``nnx_model``, ``cudnn``), written
down once. The train loop, evaluator, generator and checkpoints take any ``LanguageModelLike``; the tests hold
every form to it (tests/test_models.py)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax

Params = Any  # a pytree of arrays: what ``init`` returns and ``apply`` takes
Carry = tuple[Any, ...]  # the recurrent state, one entry per stacked layer ([batch, hidden] leaves)


@runtime_checkable
class LanguageModelLike(Protocol):
  """A static (frozen, hashable) description of a model; ``init`` and ``apply`` are pure functions."""

  vocab_size: int   # V: tokens in and logits out
  hidden_size: int  # H: units per layer
  num_layers: int   # stacked recurrent layers
  cell: str         # a name in lstm_jax.cells.REGISTRY

  def init(self, key: jax.Array) -> Params:
    """Fresh parameters drawn from ``key``."""

  def zero_carry(self, batch_size: int, dtype: Any = ...) -> Carry:
    """The all-zero state for ``batch_size`` sequences."""

  def apply(self, params: Params, tokens_BT: jax.Array, carry: Carry | None = None, *,
            dropout_rng: jax.Array | None = None,
            seq_lengths: jax.Array | None = None) -> tuple[jax.Array, Carry]:
    """Tokens ``[B, T]`` (int) -> ``(logits [B, T, V], final carry)``. ``carry=None``: the zero state. Dropout only
    when ``dropout_rng`` is given. ``seq_lengths [B]``: a padded batch whose final carry is each sequence's last
    valid one (logits at padded steps are not defined: mask them out of any loss)."""

  def recurrence_line(self, batch: int, steps: int) -> str | None:
    """One line for the run's start when the model chose how its recurrence runs (None: nothing to say)."""

  def recurrence_problem(self) -> str | None:
    """One line when the model, as configured, cannot run here (None: it can)."""
