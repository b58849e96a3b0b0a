"""Variable-length batches and the bidirectional layer, for every cell family (time-major, ``[T, B, ...]``).

A batch of sequences of different lengths is padded at the end to ``T`` steps and comes with
``seq_lengths [B]`` (int, ``0 <= length <= T``). Under ``masked_recurrence`` the padded steps leave the carry
untouched and output zeros, so the returned carry is each sequence's last valid one and every output equals the
one the sequence gets when run alone. ``bidirectional`` runs a forward layer and a second layer over each
sequence's valid part reversed (padding stays at the end), and concatenates their outputs.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from lstm_jax import cells

Recurrence = Callable[..., tuple[Any, jax.Array]]  # (params, xproj [T, B, G*H], carry, unroll) -> (carry, hs)


def sequence_mask(seq_lengths_B: jax.Array, num_steps: int) -> jax.Array:
  """``[T, B]`` bool, True at the valid (non-padded) steps."""
  return jnp.arange(num_steps)[:, None] < jnp.asarray(seq_lengths_B)[None, :]


def masked_recurrence(recurrence: Recurrence, params, xproj_TBG: jax.Array, carry, seq_lengths_B: jax.Array,
                      unroll: int = 1) -> tuple[Any, jax.Array]:
  """``recurrence`` (a family's, e.g. ``cells.lstm.recurrence``) over a padded batch.

  Returns ``(carry after each sequence's last valid step, hs [T, B, H] with zeros at padded steps)``. Each
  scan step runs the family's own recurrence for one step, so the cell math is not repeated here.
  """
  valid_TB = sequence_mask(seq_lengths_B, xproj_TBG.shape[0])

  def body(carry, inputs):
    xproj_BG, valid_B = inputs
    new_carry, hs_1BH = recurrence(params, xproj_BG[None], carry)
    keep = lambda new, old: jnp.where(valid_B.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
    return jax.tree.map(keep, new_carry, carry), jnp.where(valid_B[:, None], hs_1BH[0], 0.0)

  return jax.lax.scan(body, carry, (xproj_TBG, valid_TB), unroll=unroll)


def reverse_valid(xs_TB: jax.Array, seq_lengths_B: jax.Array) -> jax.Array:
  """Reverses each sequence's first ``length`` steps in place along time, ``[T, B, ...]``; padding stays put.

  Its own inverse: ``reverse_valid(reverse_valid(x, L), L) == x``.
  """
  num_steps = xs_TB.shape[0]
  t_T1 = jnp.arange(num_steps)[:, None]
  lengths_1B = jnp.asarray(seq_lengths_B)[None, :]
  source_TB = jnp.where(t_T1 < lengths_1B, lengths_1B - 1 - t_T1, t_T1)
  source = source_TB.reshape(source_TB.shape + (1,) * (xs_TB.ndim - 2))
  return jnp.take_along_axis(xs_TB, jnp.broadcast_to(source, xs_TB.shape), axis=0)


def recurrence(recurrence_fn: Recurrence, params, xproj_TBG: jax.Array, carry, seq_lengths_B: jax.Array | None = None,
               unroll: int = 1) -> tuple[Any, jax.Array]:
  """``recurrence_fn`` over all T steps, or with ``seq_lengths_B`` over each sequence's valid steps only
  (``masked_recurrence``); ``-> (carry, hs [T, B, H])``."""
  if seq_lengths_B is None:
    return recurrence_fn(params, xproj_TBG, carry, unroll=unroll)
  return masked_recurrence(recurrence_fn, params, xproj_TBG, carry, seq_lengths_B, unroll=unroll)


def layer(cell: str, params, xs_TBI: jax.Array, carry=None, seq_lengths_B: jax.Array | None = None,
          unroll: int = 1) -> tuple[Any, jax.Array]:
  """One layer of family ``cell`` over ``[T, B, in]``; with ``seq_lengths_B`` the padded steps are masked."""
  family = cells.get_family(cell)
  if carry is None:
    carry = family.zero_carry(xs_TBI.shape[1], params["W_h"].shape[0], xs_TBI.dtype)
  return recurrence(family.recurrence, params, family.project_inputs(params, xs_TBI), carry, seq_lengths_B, unroll)


def bidirectional(cell: str, params: dict[str, Any], xs_TBI: jax.Array, seq_lengths_B: jax.Array | None = None,
                  carry=None, unroll: int = 1) -> tuple[tuple[Any, Any], jax.Array]:
  """A bidirectional layer: ``params = {"forward": ..., "backward": ...}`` (each the family's layer params).

  The backward layer reads each sequence's valid part from its last step to its first. Returns
  ``((forward carry, backward carry), hs [T, B, 2H])`` with ``hs[..., :H]`` forward and ``hs[..., H:]`` backward
  outputs aligned to the input steps (zeros at padded steps). ``carry``: a ``(forward, backward)`` pair or None.
  """
  num_steps, batch = xs_TBI.shape[:2]
  lengths = jnp.full((batch,), num_steps, jnp.int32) if seq_lengths_B is None else jnp.asarray(seq_lengths_B)
  carry_fwd, carry_bwd = (None, None) if carry is None else carry
  carry_fwd, hs_fwd = layer(cell, params["forward"], xs_TBI, carry_fwd, lengths, unroll)
  carry_bwd, hs_bwd_reversed = layer(cell, params["backward"], reverse_valid(xs_TBI, lengths), carry_bwd, lengths,
                                     unroll)
  return (carry_fwd, carry_bwd), jnp.concatenate([hs_fwd, reverse_valid(hs_bwd_reversed, lengths)], axis=-1)


def init_bidirectional(cell: str, key: jax.Array, input_size: int, hidden_size: int, scheme: str = "d2l"):
  """``{"forward": params, "backward": params}`` for ``bidirectional``."""
  family = cells.get_family(cell)
  k_fwd, k_bwd = jax.random.split(key)
  return {"forward": family.init_params(k_fwd, input_size, hidden_size, scheme),
          "backward": family.init_params(k_bwd, input_size, hidden_size, scheme)}
