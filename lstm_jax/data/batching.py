"""Minibatches exactly as each edition of the book cuts them.

An epoch is a list of ``(inputs [B, T], targets [B, T])`` int32 pairs whose targets are the inputs shifted by one
token. It is a pure function of ``(ids, edition, sampling, batch_size, num_steps, seed, epoch)``: the per-epoch
random offset and shuffle come from ``numpy.random.default_rng([seed, epoch])``. The iterator's position is thus
plain data, ``(epoch, batch index)``, which a checkpoint stores.

Sampling:
- ``random``: non-overlapping subsequences at multiples of ``num_steps`` (after the edition's random offset),
  shuffled; the recurrent state is reset for every minibatch.
- ``sequential`` (the book's "consecutive"/"adjacent"): the token stream is cut into ``batch_size`` contiguous
  rows and the minibatches walk along them, so row ``b`` of minibatch ``t+1`` continues row ``b`` of minibatch
  ``t``; the trainer carries the state across minibatches within an epoch.
- ``windows`` (d2l 1.x): every length ``num_steps + 1`` window with stride 1 starting in ``[0, num_windows)``,
  shuffled, the last batch partial.
Offsets per edition: ``d2l_zh1`` none; ``d2l_2019`` uniform in ``[0, T)`` for both samplings; ``d2l_0x``
``[0, T)`` for random and ``[0, T]`` for sequential; other editions use ``d2l_0x``'s rules.
"""

from __future__ import annotations

import numpy as np

Batch = tuple[np.ndarray, np.ndarray]  # (inputs [B, T], targets [B, T]), int32
SAMPLINGS = ("random", "sequential", "windows")


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
  return np.random.default_rng([seed, epoch])


def _gather(ids: np.ndarray, starts: np.ndarray, num_steps: int) -> Batch:
  offsets = np.arange(num_steps)
  inputs = ids[starts[:, None] + offsets]
  targets = ids[starts[:, None] + offsets + 1]
  return inputs.astype(np.int32), targets.astype(np.int32)


def random_batches(ids: np.ndarray, batch_size: int, num_steps: int, edition: str,
                   rng: np.random.Generator) -> list[Batch]:
  """Shuffled non-overlapping subsequences (``data_iter_random`` / ``seq_data_iter_random``)."""
  offset = 0 if edition == "d2l_zh1" else int(rng.integers(0, num_steps))
  length = len(ids) - offset
  num_examples = (length - 1) // num_steps - (1 if edition == "d2l_2019" else 0)
  starts = offset + num_steps * rng.permutation(num_examples)
  num_batches = num_examples // batch_size
  return [_gather(ids, starts[i * batch_size:(i + 1) * batch_size], num_steps) for i in range(num_batches)]


def sequential_batches(ids: np.ndarray, batch_size: int, num_steps: int, edition: str,
                       rng: np.random.Generator) -> list[Batch]:
  """Adjacent minibatches along ``batch_size`` contiguous rows (``data_iter_consecutive`` / ``seq_data_iter_sequential``)."""
  if edition == "d2l_zh1":
    offset, usable = 0, len(ids)
  elif edition == "d2l_2019":
    offset = int(rng.integers(0, num_steps))
    usable = len(ids) - offset
  else:
    offset = int(rng.integers(0, num_steps + 1))
    usable = len(ids) - offset - 1
  row_length = usable // batch_size
  if edition in ("d2l_zh1", "d2l_2019"):
    rows = ids[offset:offset + batch_size * row_length].reshape(batch_size, row_length)
    inputs_rows, targets_rows = rows[:, :-1], rows[:, 1:]
    num_batches = (row_length - 1) // num_steps
  else:
    inputs_rows = ids[offset:offset + batch_size * row_length].reshape(batch_size, row_length)
    targets_rows = ids[offset + 1:offset + 1 + batch_size * row_length].reshape(batch_size, row_length)
    num_batches = row_length // num_steps
  return [(inputs_rows[:, i * num_steps:(i + 1) * num_steps].astype(np.int32),
           targets_rows[:, i * num_steps:(i + 1) * num_steps].astype(np.int32)) for i in range(num_batches)]


def window_batches(ids: np.ndarray, batch_size: int, num_steps: int, first_window: int, num_windows: int,
                   rng: np.random.Generator | None) -> list[Batch]:
  """d2l 1.x: windows starting at ``first_window + [0, num_windows)``, shuffled when ``rng`` is given."""
  starts = first_window + (rng.permutation(num_windows) if rng is not None else np.arange(num_windows))
  return [_gather(ids, starts[i:i + batch_size], num_steps) for i in range(0, num_windows, batch_size)]


def epoch_batches(ids: np.ndarray, *, sampling: str, edition: str, batch_size: int, num_steps: int,
                  seed: int, epoch: int, num_windows: int = 10000) -> list[Batch]:
  """All minibatches of one training epoch."""
  rng = epoch_rng(seed, epoch)
  if sampling == "random":
    return random_batches(ids, batch_size, num_steps, edition, rng)
  if sampling == "sequential":
    return sequential_batches(ids, batch_size, num_steps, edition, rng)
  if sampling == "windows":
    return window_batches(ids, batch_size, num_steps, 0, num_windows, rng)
  raise ValueError(f"Unknown sampling {sampling!r}; choose one of {SAMPLINGS} (--config.data.sampling=NAME).")


def evaluation_batches(ids: np.ndarray, batch_size: int, num_steps: int) -> list[Batch]:
  """Covers every target of a stream once: ``batch_size`` contiguous rows walked in ``num_steps`` chunks (the last
  chunk may be shorter), for an evaluator that carries the state across chunks."""
  batch_size = max(1, min(batch_size, (len(ids) - 1) // max(num_steps, 1)))
  row_length = (len(ids) - 1) // batch_size
  inputs_rows = ids[:batch_size * row_length].reshape(batch_size, row_length)
  targets_rows = ids[1:1 + batch_size * row_length].reshape(batch_size, row_length)
  return [(inputs_rows[:, i:i + num_steps].astype(np.int32), targets_rows[:, i:i + num_steps].astype(np.int32))
          for i in range(0, row_length, num_steps)]
