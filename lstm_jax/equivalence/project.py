"""The project's own training, run through its real loop and recorded step by step.

``train_recorded`` builds the run as ``train.loop.train_and_evaluate`` does (``train.loop.start_run``: corpus, model,
optimizer, data-parallel mesh, the jitted step with the state donated) and drives ``train.train_epoch`` epoch after
epoch (which zeroes the carried state at each epoch's start and walks the pipeline's minibatches), with the compiled
step wrapped so that every loss and the parameters after chosen steps are copied out before the next step donates
them. Nothing is written to disk.
"""

from __future__ import annotations

import types
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lstm_jax.equivalence import reference
from lstm_jax.train import loop as train
from lstm_jax.train import sharding as sharding_lib
from lstm_jax.train.state import SavedState, create_train_state


class _Enough(Exception):
  """Raised from inside the step wrapper after ``max_steps`` steps."""


def host_copy(tree: Any) -> Any:
  """A NumPy copy of every leaf (a view of a CPU buffer would change when the buffer is donated)."""
  return jax.tree.map(lambda x: np.array(x, copy=True), jax.device_get(tree))


def single_device(run: train.Run) -> train.Run:
  """``run`` on the first device alone (its mesh and compiled step), to compare with its data-parallel self."""
  run.devices = sharding_lib.mesh(jax.devices()[:1])
  run.step_fn = train.compile_train_step(run.model, run.optimizer, run.carry_state, run.devices)
  return run


def train_recorded(config: ml_collections.ConfigDict, *, max_steps: int | None = None,
                   snapshot_steps: Iterable[int] = (), one_device: bool = False
                   ) -> tuple[dict[str, Any], reference.Trajectory, train.Run]:
  """Trains ``config`` for ``config.train.num_epochs`` epochs (or ``max_steps`` steps) through ``train.train_epoch``.

  Returns ``(initial params, trajectory, run)``: the parameters ``create_train_state`` drew for ``config.seed``
  (NumPy), the per-step losses (``nll_sum / tokens`` of each minibatch) with the parameters after each of
  ``snapshot_steps`` and after the last step, and the run (its ``devices`` mesh: the devices the batch was split
  over).
  """
  run = train.start_run(config, workdir=None)
  if one_device:
    single_device(run)
  state = create_train_state(run.model, run.optimizer, config.seed, config.data.batch_size)
  initial = host_copy(state.params)
  saved = SavedState(sharding_lib.place_train_state(state, run.devices))
  out, wanted, step_fn, latest = reference.Trajectory(), set(snapshot_steps), run.step_fn, {}

  def recording_step(state, inputs_BT, targets_BT):
    new_state, metrics = step_fn(state, inputs_BT, targets_BT)
    latest["state"] = new_state
    out.losses.append(float(metrics["nll_sum"]) / targets_BT.size)
    if len(out.losses) in wanted:
      out.snapshots[len(out.losses)] = host_copy(new_state.params)
    if max_steps is not None and len(out.losses) >= max_steps:
      raise _Enough
    return new_state, metrics

  run.step_fn, no_stop = recording_step, types.SimpleNamespace(signal=None)
  try:
    for epoch in range(1, config.train.num_epochs + 1):
      saved.epoch = epoch
      train.train_epoch(run, saved, epoch, no_stop)
      saved = SavedState(saved.state, epoch=epoch + 1, nll_sum=jnp.zeros(()))  # as train._train_epochs
  except _Enough:
    pass
  run.step_fn = step_fn
  if latest:  # not donated: no step followed it
    out.snapshots[len(out.losses)] = host_copy(latest["state"].params)
  return initial, out, run
