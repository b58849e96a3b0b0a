"""What a run feeds its model: the minibatches of an epoch, the validation minibatches and the carry rule.

Each is a pure function of the config and the loaded corpus, so a resumed run regenerates exactly the minibatches
it would have seen (the data position in a checkpoint is just ``(epoch, batch)``).
"""

from __future__ import annotations

import ml_collections

from lstm_jax.data import batching
from lstm_jax.data import corpora


def carries_state(data_config: ml_collections.ConfigDict) -> bool:
  """Whether minibatch ``t + 1`` starts from minibatch ``t``'s final state (else from zeros).

  ``data.carry_state`` None follows the sampling (carried for ``sequential`` only); False zeroes the state before
  every minibatch of any sampling; True is allowed only with ``sequential``, whose rows continue one another.
  """
  sequential = data_config.sampling == "sequential"
  if data_config.get("carry_state") is None:
    return sequential
  if data_config.carry_state and not sequential:
    raise ValueError(f"data.carry_state=True needs sequential sampling (rows that continue one another), not "
                     f"{data_config.sampling!r}; set --config.data.sampling=sequential or drop carry_state.")
  return bool(data_config.carry_state)


def validation_batches(config: ml_collections.ConfigDict, corpus: corpora.Corpus) -> list[batching.Batch]:
  """The fixed validation minibatches (``[batch, time]`` inputs and targets); empty when the config holds none out."""
  d = config.data
  if d.sampling == "windows":
    return batching.window_batches(corpus.train_ids, d.batch_size, d.num_steps, d.num_train_windows,
                                   d.num_val_windows, rng=None)
  if len(corpus.val_ids) > 1:
    return batching.evaluation_batches(corpus.val_ids, d.batch_size, d.num_steps)
  return []


def epoch_batches(config: ml_collections.ConfigDict, corpus: corpora.Corpus, epoch: int) -> list[batching.Batch]:
  """Epoch ``epoch``'s training minibatches (1-based), a pure function of the config's seed and data rules."""
  d = config.data
  return batching.epoch_batches(corpus.train_ids, sampling=d.sampling, edition=d.edition, batch_size=d.batch_size,
                                num_steps=d.num_steps, seed=config.seed, epoch=epoch, num_windows=d.num_train_windows)
