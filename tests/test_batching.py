"""Properties of the book's minibatch iterators."""

import numpy as np
import pytest

from lstm_jax.data import batching

EDITIONS = ["d2l_zh1", "d2l_2019", "d2l_0x"]


def _ids(n=1000):
  return np.arange(n, dtype=np.int32)  # token id == position: targets and contiguity are visible in the values


@pytest.mark.parametrize("edition", EDITIONS)
@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_every_target_is_the_next_token(edition, sampling):
  ids = _ids()
  for epoch in range(3):
    batches = batching.epoch_batches(ids, sampling=sampling, edition=edition, batch_size=4, num_steps=7, seed=0,
                                     epoch=epoch)
    assert batches
    for inputs, targets in batches:
      assert inputs.shape == targets.shape == (4, 7)
      np.testing.assert_array_equal(targets, inputs + 1)
      np.testing.assert_array_equal(np.diff(inputs, axis=1), 1)  # each row is a contiguous slice of the text


@pytest.mark.parametrize("edition", EDITIONS)
def test_sequential_batches_continue_each_row(edition):
  batches = batching.epoch_batches(_ids(), sampling="sequential", edition=edition, batch_size=4, num_steps=7,
                                   seed=3, epoch=1)
  for (prev_inputs, _), (inputs, _) in zip(batches, batches[1:]):
    np.testing.assert_array_equal(inputs[:, 0], prev_inputs[:, -1] + 1)
  rows = np.concatenate([inputs for inputs, _ in batches], axis=1)
  assert len(np.unique(rows)) == rows.size  # rows do not overlap


@pytest.mark.parametrize("edition", EDITIONS)
def test_random_batches_cover_disjoint_aligned_chunks(edition):
  ids = _ids()
  batches = batching.epoch_batches(ids, sampling="random", edition=edition, batch_size=4, num_steps=7, seed=0, epoch=2)
  starts = np.concatenate([inputs[:, 0] for inputs, _ in batches])
  assert len(np.unique(starts)) == len(starts)
  offsets = np.unique(starts % 7)
  assert len(offsets) == 1  # one offset per epoch, chunks at multiples of num_steps after it
  if edition == "d2l_zh1":
    assert offsets[0] == 0
  num_chunks = (len(ids) - 1 - offsets[0]) // 7 - (1 if edition == "d2l_2019" else 0)
  assert len(batches) == num_chunks // 4


def test_the_book_sizes_eight_minibatches_per_epoch():
  ids = _ids(10000)
  for edition in EDITIONS:
    for sampling in ("random", "sequential"):
      for epoch in range(5):
        batches = batching.epoch_batches(ids, sampling=sampling, edition=edition, batch_size=32, num_steps=35, seed=0,
                                         epoch=epoch)
        assert len(batches) == 8, (edition, sampling, epoch)


def test_epochs_are_reproducible_and_differ():
  kwargs = dict(sampling="random", edition="d2l_0x", batch_size=4, num_steps=7, seed=5)
  a = batching.epoch_batches(_ids(), epoch=1, **kwargs)
  b = batching.epoch_batches(_ids(), epoch=1, **kwargs)
  c = batching.epoch_batches(_ids(), epoch=2, **kwargs)
  assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
  assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))


def test_windows_cover_each_start_once_with_partial_last_batch():
  ids = _ids(200)
  batches = batching.epoch_batches(ids, sampling="windows", edition="d2l_1x", batch_size=32, num_steps=5, seed=0,
                                   epoch=0, num_windows=100)
  assert [len(x) for x, _ in batches] == [32, 32, 32, 4]
  starts = np.sort(np.concatenate([x[:, 0] for x, _ in batches]))
  np.testing.assert_array_equal(starts, np.arange(100))
  for inputs, targets in batches:
    np.testing.assert_array_equal(targets, inputs + 1)


def test_evaluation_batches_cover_every_target_once():
  ids = _ids(103)
  batches = batching.evaluation_batches(ids, batch_size=4, num_steps=10)
  targets = np.sort(np.concatenate([t.ravel() for _, t in batches]))
  np.testing.assert_array_equal(targets, np.arange(1, 1 + 4 * (102 // 4)))
  for (prev, _), (cur, _) in zip(batches, batches[1:]):
    np.testing.assert_array_equal(cur[:, 0], prev[:, -1] + 1)


def test_unknown_sampling_is_a_clear_error():
  with pytest.raises(ValueError, match="--config.data.sampling"):
    batching.epoch_batches(_ids(), sampling="shuffled", edition="d2l_0x", batch_size=4, num_steps=7, seed=0, epoch=0)
