"""Checkpoints with orbax's ``CheckpointManager``: everything a run needs to continue exactly.

A checkpoint at step ``s`` is ``<workdir>/checkpoints/<s>/`` with two items:
- ``state``: the ``TrainState`` (params, optimizer state, step, RNG key data, carried recurrent state), the data
  position ``(epoch, batch)`` of the next minibatch, and the running sums of the current epoch's loss;
- ``meta``: JSON with the config and the vocabulary, so evaluation and generation need no corpus.
Saves are asynchronous (from a host copy, so the next train step may reuse the device buffers) and atomic (orbax
writes to a temporary directory and renames it). The manager keeps the last ``keep`` checkpoints and, beside them,
the best one by the metric given at save time (``perplexity``, lower is better).
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy

from lstm_jax import config as config_lib
from lstm_jax import optimizer as optimizer_lib
from lstm_jax import train_state as train_state_lib
from lstm_jax import workdir as workdir_lib
from lstm_jax import models
from lstm_jax.data.vocab import Vocab

COMPATIBILITY_KEYS = config_lib.RECIPE_SECTIONS


class CheckpointError(RuntimeError):
  """A checkpoint cannot be used; the message says why and what to do."""


class Checkpointer:
  """A thin owner of one ``ocp.CheckpointManager`` for a workdir."""

  def __init__(self, workdir: workdir_lib.PathLike, keep: int = 3, read_only: bool = False):
    policy = preservation_policy.AnyPreservationPolicy([
        preservation_policy.LatestN(n=keep),
        preservation_policy.BestN(get_metric_fn=lambda metrics: -metrics["perplexity"], n=1,
                                  keep_checkpoints_without_metrics=False),
    ])
    verbosity = logging.get_verbosity()
    if read_only:  # orbax warns that a read-only manager saves nothing: expected here, not news for the user
      logging.set_verbosity(logging.ERROR)
    try:
      self.manager = ocp.CheckpointManager(
          workdir_lib.checkpoint_dir(workdir), item_names=("state", "meta"),
          options=ocp.CheckpointManagerOptions(preservation_policy=policy, read_only=read_only,
                                               create=not read_only))
    finally:
      logging.set_verbosity(verbosity)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, config: ml_collections.ConfigDict, vocab: Vocab,
           perplexity: float | None = None, fingerprint: str = "") -> None:
    """Starts an asynchronous save of ``state`` (any pytree of arrays) at ``step``; raises an earlier save's error.
    ``fingerprint``: the corpus's (``corpora.fingerprint``), checked when the run resumes."""
    self.manager.check_for_errors()
    host_state = host_copy(state)
    meta = {"config": config.to_dict(), "vocab": vocab.to_json(), "step": int(step),
            "corpus_fingerprint": fingerprint}
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(host_state),
                                                    meta=ocp.args.JsonSave(meta)),
                      metrics=None if perplexity is None else {"perplexity": float(perplexity)}, force=True)

  def read_meta(self, step: int) -> dict[str, Any]:
    try:
      return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # orbax raises many types for unreadable files
      raise self._unreadable(step, e) from e

  def restore_state(self, step: int, abstract_state: Any) -> Any:
    """Restores the ``state`` item onto the structure, shapes and devices of ``abstract_state``."""
    try:
      return self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))["state"]
    except Exception as e:
      raise self._unreadable(step, e) from e

  def _unreadable(self, step: int, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint step {step} in {self.manager.directory} cannot be read ({type(error).__name__}: "
        f"{str(error)[:300]}). It is truncated, corrupt or from an incompatible version. Move that step's directory "
        f"away to resume from an earlier step, or start fresh in a new --workdir.")

  def wait(self) -> None:
    """Blocks until pending saves are written; raises the error of a failed background save."""
    self.manager.wait_until_finished()
    self.manager.check_for_errors()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def host_copy(tree: Any) -> Any:
  """NumPy copies of every array of ``tree``; arrays split over several processes are gathered first (a
  collective: every process of a multi-host job calls this at the same point), so each process holds the whole
  state and orbax writes it once, from the primary process."""
  def copy(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return multihost_utils.process_allgather(x, tiled=True)  # the global value (host values would be stacked)
    return jax.device_get(x)

  return jax.tree.map(copy, tree)


def check_compatible(saved_config: dict[str, Any], config: ml_collections.ConfigDict, where: str) -> None:
  """Raises ``CheckpointError`` naming every key (of ``COMPATIBILITY_KEYS``) that differs."""
  found = config_lib.differences(saved_config, config, COMPATIBILITY_KEYS, saved_as="checkpoint")
  if found:
    raise CheckpointError(
        f"The checkpoint in {where} was written with a different config ({'; '.join(found)}). Use the same "
        f"config to resume, a new --workdir for a new run, or --config.train.resume=False to start fresh (the old "
        f"checkpoints are kept aside).")


def check_fingerprint(meta: dict[str, Any], fingerprint: str, where: str) -> None:
  """Refuses to resume on another corpus than the checkpoint's (a checkpoint without a fingerprint passes)."""
  saved = meta.get("corpus_fingerprint")
  if saved and fingerprint and saved != fingerprint:
    raise CheckpointError(
        f"The checkpoint in {where} was trained on another corpus (fingerprint {saved[:12]}, now {fingerprint[:12]}: "
        f"the text, its edition or the vocabulary changed). Restore the original text to resume, or start fresh "
        f"with --config.train.resume=False (the old run is set aside, never deleted).")


def load_params(workdir: workdir_lib.PathLike, step: int | str | None = None):
  """Loads ``(model, params, vocab, config)`` from a workdir's checkpoint for evaluation or generation.

  ``step``: an int, ``"best"`` (lowest saved perplexity) or ``None`` (latest). Restores onto this host's default
  device whatever device layout wrote the checkpoint; the shapes come from the saved config and vocabulary.
  """
  if not workdir_lib.checkpoint_dir(workdir).is_dir():
    raise CheckpointError(f"No checkpoints in {workdir_lib.checkpoint_dir(workdir)}; train first with "
                          f"python -m lstm_jax.main --config ... --workdir {workdir}.")
  checkpointer = Checkpointer(workdir, read_only=True)
  chosen = checkpointer.best_step() if step == "best" else checkpointer.latest_step() if step is None else int(step)
  if chosen is None or chosen not in checkpointer.all_steps():
    raise CheckpointError(f"Checkpoint step {step!r} not found in {workdir_lib.checkpoint_dir(workdir)}; available "
                          f"steps: {checkpointer.all_steps()}.")
  meta = checkpointer.read_meta(chosen)
  config = ml_collections.ConfigDict(meta["config"])
  vocab = Vocab.from_json(meta["vocab"])
  model = models.from_config(config.model, len(vocab))
  optimizer = optimizer_lib.make_optimizer(config.optimizer)
  state = jax.eval_shape(lambda: train_state_lib.create_train_state(model, optimizer, config.seed,
                                                                    config.data.batch_size))
  restored = checkpointer.restore_state(chosen, train_state_lib.abstract_saved_state(state))
  checkpointer.close()
  return model, restored["train"]["params"], vocab, config


def saved_fingerprint(workdir: workdir_lib.PathLike, step: int | None = None) -> str:
  """The corpus fingerprint stored with a checkpoint ("" when it has none or there is no checkpoint)."""
  if not workdir_lib.checkpoint_dir(workdir).is_dir():
    return ""
  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    chosen = checkpointer.latest_step() if step is None else step
    return "" if chosen is None else checkpointer.read_meta(chosen).get("corpus_fingerprint", "")
  finally:
    checkpointer.close()
