"""A one-layer LSTM language model trained by a plain ``jax.grad`` loop that shares no code with the project's model,
train step, loss, optimizer or batching; only the initial weights are taken from the project (converted here).

- Parameters, per gate ``q`` in ``i, f, g, o``: ``W_xq [V, H]``, ``W_hq [H, H]``, ``b_q [H]``; the head ``W_y [H, V]``,
  ``b_y [V]``. ``i = sigmoid``, ``f = sigmoid`` (it scales the old cell), ``g = tanh``, ``o = sigmoid``.
- The cell runs step by step in a ``lax.scan`` over time on ``one_hot(x) @ W_xq`` (a real matmul, not a gather).
- The loss is ``-mean(log_softmax(logits)[target])`` over every ``[batch, time]`` position.
- Minibatches: the token stream cut into ``batch`` contiguous rows after an offset; minibatch ``k`` is columns
  ``[k T, (k+1) T)`` of every row, so row ``b`` of minibatch ``k+1`` continues row ``b`` of minibatch ``k``.
- The state is zeroed at every epoch's start and, with ``carry_state``, passed into the next minibatch as a plain
  input (no gradient can reach the previous minibatch); without it, zeroed before every minibatch.
- Updates written out: global-norm clipping ``g * min(1, clip / |g|)``, then SGD ``p - lr g`` or Adam (bias-corrected
  moments, ``lr m^ / (sqrt(v^) + eps)``).

``split_contraction=True`` computes ``h @ W_hq`` as two half-sums over ``h``'s units (the same numbers in exact
arithmetic, another float32 rounding): the baseline for how fast rounding alone separates two trajectories.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

GATES = ("i", "f", "g", "o")
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8

Batch = tuple[np.ndarray, np.ndarray]  # (inputs [B, T], targets [B, T]) int


@dataclasses.dataclass(frozen=True)
class Recipe:
  """What the optimizer and the state do: ``optimizer`` "adam" or "sgd", ``clip_norm <= 0`` for no clipping."""
  optimizer: str
  learning_rate: float
  clip_norm: float
  carry_state: bool


@dataclasses.dataclass
class Trajectory:
  """A run's per-step losses (mean NLL of minibatch ``t``, before update ``t``; 1-based ``t`` is ``losses[t-1]``)
  and its parameters after chosen steps and after its last step, in the project's layout (NumPy)."""
  losses: list[float] = dataclasses.field(default_factory=list)
  snapshots: dict[int, Any] = dataclasses.field(default_factory=dict)


# Data: the book's "sequential" minibatches, cut here independently of lstm_jax.data.batching.

def epoch_offset(seed: int, epoch: int, num_steps: int) -> int:
  """The documented per-epoch offset of sequential sampling (d2l 0.x rules, which the raw edition follows):
  uniform in ``[0, num_steps]`` from ``numpy.random.default_rng([seed, epoch])``."""
  return int(np.random.default_rng([seed, epoch]).integers(0, num_steps + 1))


def sequential_minibatches(ids: np.ndarray, batch_size: int, num_steps: int, offset: int) -> list[Batch]:
  """``batch_size`` contiguous rows of ``ids[offset:]``, walked ``num_steps`` columns at a time."""
  row_length = (len(ids) - offset - 1) // batch_size
  rows = [ids[offset + b * row_length: offset + (b + 1) * row_length + 1] for b in range(batch_size)]
  batches = []
  for k in range(row_length // num_steps):
    window = slice(k * num_steps, (k + 1) * num_steps)
    inputs = np.stack([row[:-1][window] for row in rows])
    targets = np.stack([row[1:][window] for row in rows])
    batches.append((inputs.astype(np.int32), targets.astype(np.int32)))
  return batches


# Layout: the project's fused [*, 4H] blocks (documented gate order i, f, g, o) <-> one matrix per gate.

def from_project(params: dict[str, Any]) -> dict[str, jax.Array]:
  """The project's one-layer one-hot model ``{"layers": ({W_x, W_h, b},), "head": {W, b}}`` -> per-gate params."""
  (layer,) = params["layers"]
  hidden = layer["W_h"].shape[0]
  out = {}
  for k, q in enumerate(GATES):
    block = slice(k * hidden, (k + 1) * hidden)
    out[f"W_x{q}"] = jnp.asarray(layer["W_x"])[:, block]
    out[f"W_h{q}"] = jnp.asarray(layer["W_h"])[:, block]
    out[f"b_{q}"] = jnp.asarray(layer["b"])[block]
  out["W_y"], out["b_y"] = jnp.asarray(params["head"]["W"]), jnp.asarray(params["head"]["b"])
  return out


def to_project(params: dict[str, jax.Array]) -> dict[str, Any]:
  """Per-gate params -> the project's layout (NumPy), for comparing parameter by parameter."""
  def cat(prefix):
    return np.concatenate([np.asarray(params[f"{prefix}{q}"]) for q in GATES], axis=-1)
  return {"layers": ({"W_x": cat("W_x"), "W_h": cat("W_h"), "b": cat("b_")},),
          "head": {"W": np.asarray(params["W_y"]), "b": np.asarray(params["b_y"])}}


# Model and loss.

def _hidden_matmul(h_BH: jax.Array, W_hh: jax.Array, split_contraction: bool) -> jax.Array:
  if not split_contraction:
    return h_BH @ W_hh
  half = h_BH.shape[-1] // 2
  return h_BH[:, :half] @ W_hh[:half] + h_BH[:, half:] @ W_hh[half:]


def forward(params, inputs_BT: jax.Array, h_BH: jax.Array, c_BH: jax.Array, split_contraction: bool = False):
  """Tokens ``[B, T]`` from state ``(h, c)`` ``[B, H]`` -> ``(logits [B, T, V], (h, c))``."""
  vocab = params["W_y"].shape[1]
  x_TBV = jax.nn.one_hot(inputs_BT.T, vocab, dtype=params["W_y"].dtype)

  def cell(state, x_BV):
    h, c = state
    pre = {q: x_BV @ params[f"W_x{q}"] + _hidden_matmul(h, params[f"W_h{q}"], split_contraction) + params[f"b_{q}"]
           for q in GATES}
    c = jax.nn.sigmoid(pre["f"]) * c + jax.nn.sigmoid(pre["i"]) * jnp.tanh(pre["g"])
    h = jax.nn.sigmoid(pre["o"]) * jnp.tanh(c)
    return (h, c), h

  (h_BH, c_BH), hs_TBH = jax.lax.scan(cell, (h_BH, c_BH), x_TBV)
  logits_BTV = jnp.einsum("tbh,hv->btv", hs_TBH, params["W_y"]) + params["b_y"]
  return logits_BTV, (h_BH, c_BH)


def mean_nll(logits_BTV: jax.Array, targets_BT: jax.Array) -> jax.Array:
  log_probs = jax.nn.log_softmax(logits_BTV, axis=-1)
  return -jnp.mean(jnp.take_along_axis(log_probs, targets_BT[..., None], axis=-1))


@functools.partial(jax.jit, static_argnames="split_contraction")
def loss_and_grads(params, inputs_BT, targets_BT, h_BH, c_BH, split_contraction: bool = False):
  """``(loss, final state), grads``: the state enters as a plain input, so its gradient is never taken."""
  def loss_fn(p):
    logits, state = forward(p, inputs_BT, h_BH, c_BH, split_contraction)
    return mean_nll(logits, targets_BT), state
  return jax.value_and_grad(loss_fn, has_aux=True)(params)


@jax.jit
def _nll_sum(params, inputs_BT, targets_BT, h_BH, c_BH):
  logits, state = forward(params, inputs_BT, h_BH, c_BH)
  return mean_nll(logits, targets_BT) * targets_BT.size, state


def held_out_nll(project_params: dict[str, Any], ids: np.ndarray, batch_size: int, num_steps: int) -> float:
  """Mean NLL (nats per token) of every next token of ``ids``: ``batch_size`` contiguous rows (fewer if the stream
  is short) read ``num_steps`` columns at a time (the last read may be shorter), the state carried along each row."""
  params = from_project(project_params)
  batch_size = max(1, min(batch_size, (len(ids) - 1) // max(num_steps, 1)))
  row_length = (len(ids) - 1) // batch_size
  rows = np.stack([ids[b * row_length: (b + 1) * row_length + 1] for b in range(batch_size)]).astype(np.int32)
  state = (jnp.zeros((batch_size, params["W_hi"].shape[0]), jnp.float32),) * 2
  total = 0.0
  for start in range(0, row_length, num_steps):
    stop = min(start + num_steps, row_length)
    nll_sum, state = _nll_sum(params, rows[:, start:stop], rows[:, start + 1:stop + 1], *state)
    total += float(nll_sum)
  return total / (batch_size * row_length)


# Optimizer, written out.

def init_moments(params) -> dict[str, Any]:
  zeros = {k: jnp.zeros_like(v) for k, v in params.items()}
  return {"count": jnp.zeros((), jnp.int32), "m": zeros, "v": dict(zeros)}


def clip(grads, clip_norm: float):
  """``g * clip / |g|`` when the global norm ``|g|`` exceeds ``clip_norm > 0``; ``g`` otherwise."""
  if clip_norm <= 0:
    return grads
  norm = jnp.sqrt(sum(jnp.sum(g * g) for g in grads.values()))
  scale = jnp.where(norm > clip_norm, clip_norm / norm, 1.0)
  return {k: g * scale for k, g in grads.items()}


@functools.partial(jax.jit, static_argnames="recipe")
def update(params, grads, moments, recipe: Recipe):
  """One optimizer step; returns ``(params, moments)``."""
  grads = clip(grads, recipe.clip_norm)
  lr = recipe.learning_rate
  if recipe.optimizer == "sgd":
    return {k: p - lr * grads[k] for k, p in params.items()}, moments
  if recipe.optimizer != "adam":
    raise ValueError(f"The reference knows 'sgd' and 'adam', not {recipe.optimizer!r}.")
  t = moments["count"] + 1
  t_float = t.astype(params["W_y"].dtype)
  m = {k: ADAM_B1 * moments["m"][k] + (1 - ADAM_B1) * g for k, g in grads.items()}
  v = {k: ADAM_B2 * moments["v"][k] + (1 - ADAM_B2) * g * g for k, g in grads.items()}
  new = {k: p - lr * (m[k] / (1 - ADAM_B1 ** t_float)) / (jnp.sqrt(v[k] / (1 - ADAM_B2 ** t_float)) + ADAM_EPS)
         for k, p in params.items()}
  return new, {"count": t, "m": m, "v": v}


# The loop.

def walk(epochs: Iterable[Sequence[Batch]], max_steps: int | None = None):
  """``(starts an epoch, inputs, targets)`` for each minibatch of ``epochs`` in order, at most ``max_steps``."""
  step = 0
  for batches in epochs:
    for index, (inputs, targets) in enumerate(batches):
      if max_steps is not None and step >= max_steps:
        return
      step += 1
      yield index == 0, inputs, targets


def train(initial_params: dict[str, Any], epochs: Iterable[Sequence[Batch]], recipe: Recipe, *,
          max_steps: int | None = None, snapshot_steps: Iterable[int] = (),
          split_contraction: bool = False, dtype=jnp.float32) -> Trajectory:
  """Trains from the project-layout ``initial_params`` over ``epochs`` (each a list of minibatches), at most
  ``max_steps`` updates; records every loss and the parameters after each of ``snapshot_steps`` and the last.
  ``dtype=jnp.float64`` needs ``jax_enable_x64``."""
  params = {k: jnp.asarray(v, dtype) for k, v in from_project(initial_params).items()}
  moments, hidden = init_moments(params), params["W_hi"].shape[0]
  wanted, out, state = set(snapshot_steps), Trajectory(), None
  for starts_epoch, inputs, targets in walk(epochs, max_steps):
    if starts_epoch or not recipe.carry_state:
      state = (jnp.zeros((inputs.shape[0], hidden), dtype),) * 2
    (loss, state), grads = loss_and_grads(params, jnp.asarray(inputs), jnp.asarray(targets), *state,
                                          split_contraction=split_contraction)
    params, moments = update(params, grads, moments, recipe)
    out.losses.append(float(loss))
    if len(out.losses) in wanted:
      out.snapshots[len(out.losses)] = to_project(params)
  out.snapshots[len(out.losses)] = to_project(params)
  return out
