"""Checkpoints with orbax's ``CheckpointManager``: everything a run needs to continue exactly.

A checkpoint at step ``s`` is ``<workdir>/checkpoints/<s>/`` with two items:
- ``state``: the ``TrainState`` (params, optimizer state, step, RNG key data, carried recurrent state), the data
  position ``(epoch, batch)`` of the next minibatch, and the running sums of the current epoch's loss;
- ``meta``: JSON with the config and the vocabulary, so evaluation and generation need no corpus.
Saves are asynchronous (from a host copy, so the next train step may reuse the device buffers) and atomic (orbax
writes to a temporary directory and renames it); the step's directory is created before ``save`` returns, so a
folder that cannot be written fails there, and a background write that fails is raised by the next ``check``.
``meta`` also holds the run's log up to the step (``records``: ``metrics.jsonl`` is rebuilt from it on resume)
and a checksum of every array of ``state`` (checked at restore: a changed byte is refused, naming the step).

The manager keeps the last ``keep`` checkpoints and, beside them, the best one by the metrics given at save time
(``val_perplexity``, else ``train_perplexity``; lower is better). Orbax stores those metrics in the step's
directory, so "best" survives resumes and pruning.
"""

from __future__ import annotations

import hashlib
import logging as std_logging
import math
import os
import re
import sys
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy

from lstm_jax import config as config_lib
from lstm_jax.data.vocab import Vocab
from lstm_jax.models import factory as models
from lstm_jax.train import optimizer as optimizer_lib
from lstm_jax.train import state as train_state_lib
from lstm_jax.train import workdir as workdir_lib

COMPATIBILITY_KEYS = config_lib.RECIPE_SECTIONS


class CheckpointError(RuntimeError):
  """A checkpoint cannot be used; the message says why and what to do."""


class CheckpointWriteError(CheckpointError, OSError):
  """A checkpoint could not be written (disk full, no permission); earlier checkpoints are untouched."""


def rank(metrics: dict[str, Any] | None) -> tuple[int, float]:
  """How good a checkpoint is by the metrics saved with it, higher is better: a validation perplexity beats a
  training one, then the lower perplexity wins; a checkpoint without either ranks last."""
  metrics = metrics or {}
  for level, key in ((1, "val_perplexity"), (0, "train_perplexity")):
    if key in metrics:
      return level, -float(metrics[key])
  return -1, 0.0


def metrics_of(record: dict[str, Any]) -> dict[str, float]:
  """The metrics a checkpoint is ranked by, from an epoch's record: its validation perplexity when it has one,
  else its training perplexity (non-finite values are left out)."""
  for key in ("val_perplexity", "train_perplexity"):
    value = record.get(key)
    if isinstance(value, (int, float)) and math.isfinite(value):
      return {key: float(value)}
  return {}


def checksums(tree: Any) -> dict[str, str]:
  """A short SHA-256 of every array of ``tree`` by its path (integers widened to int64, so a restore that narrows
  them under 32-bit JAX agrees)."""
  def digest(leaf) -> str:
    array = np.asarray(leaf)
    if array.dtype.kind in "biu":
      array = array.astype(np.int64)
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]

  return {jax.tree_util.keystr(path): digest(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def cause(error: BaseException) -> str:
  """A short cause of a failed write: ``No space left on device: <path>`` from an ``OSError`` or from tensorstore's
  long ``RESOURCE_EXHAUSTED: ... [os_error_code='28']`` messages, else the error's type and first 200 characters."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror + (f": {error.filename}" if error.filename else "")
  text = str(error)
  code = re.search(r"os_error_code='(\d+)'", text)
  where = re.findall(r'(?:local )?file "([^"]+)"', text)
  if code:
    return os.strerror(int(code.group(1))) + (f": {where[-1]}" if where else "")
  return f"{type(error).__name__}: {text[:200]}"


class _DropOrbaxErrors(std_logging.Filter):
  """Drops orbax's error records: each failed background write is logged with its traceback by several threads,
  while the error itself is raised to the caller (``Checkpointer.check``, ``wait``) and said there in one line."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not (record.levelno >= std_logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)


def quiet_background_errors() -> None:
  """For the command-line programs: no copies of a checkpoint error from orbax's threads (``_DropOrbaxErrors``),
  and no traceback for tensorstore's late callbacks into an event loop orbax has already closed after a failed
  read or write (``RuntimeError: Event loop is closed``, reported through ``sys.unraisablehook``)."""
  absl_logger = std_logging.getLogger("absl")
  if not any(isinstance(f, _DropOrbaxErrors) for f in absl_logger.filters):
    absl_logger.addFilter(_DropOrbaxErrors())
  previous = sys.unraisablehook

  def hook(unraisable):
    value = unraisable.exc_value
    if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
      previous(unraisable)

  sys.unraisablehook = hook


class Checkpointer:
  """A thin owner of one ``ocp.CheckpointManager`` for a workdir."""

  def __init__(self, workdir: workdir_lib.PathLike, keep: int = 3, read_only: bool = False):
    self._saving = None  # the step of the last save started (the one a background failure belongs to)
    policy = preservation_policy.AnyPreservationPolicy([
        preservation_policy.LatestN(n=keep),
        preservation_policy.BestN(get_metric_fn=rank, n=1, keep_checkpoints_without_metrics=False),
    ])
    verbosity = logging.get_verbosity()
    if read_only:  # orbax warns that a read-only manager saves nothing: expected here, not news for the user
      logging.set_verbosity(logging.ERROR)
    try:
      self.manager = ocp.CheckpointManager(
          workdir_lib.checkpoint_dir(workdir), item_names=("state", "meta"),
          options=ocp.CheckpointManagerOptions(
              preservation_policy=policy, best_fn=rank, best_mode="max",  # best_fn: orbax writes the metrics
              read_only=read_only, create=not read_only,
              async_options=ocp.AsyncOptions(create_directories_asynchronously=False)))
    except (OSError, ValueError) as e:
      raise CheckpointWriteError(f"Cannot create the checkpoint folder {workdir_lib.checkpoint_dir(workdir)} "
                                 f"({cause(e)}); free space or fix its permissions.") from e
    finally:
      logging.set_verbosity(verbosity)

  @property
  def directory(self):
    return self.manager.directory

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the best metrics saved with it (``rank``), None when no step has any."""
    ranked = [(rank(self.manager.metrics(step)), step) for step in self.all_steps()]
    ranked = [(level, step) for level, step in ranked if level[0] >= 0]
    return max(ranked)[1] if ranked else None

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, config: ml_collections.ConfigDict, vocab: Vocab,
           metrics: dict[str, float] | None = None, fingerprint: str = "",
           records: list[dict[str, Any]] | None = None) -> None:
    """Starts an asynchronous save of ``state`` (any pytree of arrays) at ``step``; raises an earlier save's error
    and a step directory that cannot be created as ``CheckpointWriteError``. ``metrics``: ``metrics_of`` the
    epoch's record (mid-epoch saves have none); ``fingerprint``: the corpus's (``corpora.fingerprint``), checked
    when the run resumes; ``records``: the run's log so far (``metrics.jsonl`` is rebuilt from it on resume)."""
    self.check()
    host_state = host_copy(state)
    meta = {"config": config.to_dict(), "vocab": vocab.to_json(), "step": int(step),
            "corpus_fingerprint": fingerprint, "checksums": checksums(host_state)}
    if records is not None:
      meta["records"] = records
    self._saving = int(step)
    try:
      self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(host_state),
                                                      meta=ocp.args.JsonSave(meta)),
                        metrics=dict(metrics or {}), force=True)
    except (OSError, ValueError, RuntimeError) as e:
      raise self._write_failed(step, e) from e

  def check(self) -> None:
    """Raises the error of a background save that has failed (``CheckpointWriteError``); never waits for one
    that is still writing."""
    try:
      self.manager.check_for_errors()
      if not self.manager.is_saving_in_progress():
        self.manager.wait_until_finished()  # a finished save: returns at once, raising its error
    except (OSError, ValueError, RuntimeError, TimeoutError) as e:
      raise self._write_failed(self._saving, e) from e

  def _write_failed(self, step: int | None, error: BaseException) -> CheckpointWriteError:
    kept = [s for s in self.all_steps() if s != step]
    what = f"step {step}" if step is not None else "a checkpoint"
    return CheckpointWriteError(
        f"Saving {what} in {self.directory} failed ({cause(error)}). Earlier checkpoints are intact "
        f"(latest: {kept[-1] if kept else 'none'}); free space or fix the folder's permissions, then rerun the same "
        f"command to resume.")

  def read_meta(self, step: int) -> dict[str, Any]:
    try:
      return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # orbax raises many types for unreadable files
      raise self._unreadable(step, e) from e

  def restore_state(self, step: int, abstract_state: Any, expected: dict[str, str] | None = None) -> Any:
    """Restores the ``state`` item onto the structure, shapes and devices of ``abstract_state``; with
    ``expected`` (the ``checksums`` saved in its meta) refuses one whose arrays changed since they were saved."""
    try:
      state = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))["state"]
    except Exception as e:
      raise self._unreadable(step, e) from e
    if expected:
      found = checksums(host_copy(state))
      changed = [path for path, digest in expected.items() if found.get(path) != digest]
      if changed:
        raise CheckpointError(
            f"Checkpoint step {step} in {self.directory} fails its checksum ({changed[0]}"
            f"{f' and {len(changed) - 1} more' if len(changed) > 1 else ''}): its files changed after they were "
            f"saved. {self._elsewhere(step)}")
    return state

  def newest_usable(self) -> tuple[int | None, list[str]]:
    """The newest step whose saved step number agrees with its directory's (None: none), and one line for each
    newer one that does not (a copied or renamed step directory)."""
    notes = []
    for step in reversed(self.all_steps()):
      saved = self.read_meta(step).get("step", step)
      if int(saved) == step:
        return step, notes
      notes.append(f"{self.directory / str(step)} holds step {saved} (a copied or renamed step directory)")
    return None, notes

  def _unreadable(self, step: int, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint step {step} in {self.directory} cannot be read ({type(error).__name__}: "
        f"{str(error)[:300]}). It is truncated, corrupt or from an incompatible version. {self._elsewhere(step)}")

  def _elsewhere(self, step: int) -> str:
    others = [s for s in self.all_steps() if s != step]
    return (f"Move that step's directory away to resume from an earlier step, or start fresh in a new --workdir; "
            f"evaluate and generate take --step N (other steps: {others or 'none'}).")

  def wait(self) -> None:
    """Blocks until pending saves are written; raises the error of a failed background save."""
    try:
      self.manager.wait_until_finished()
      self.manager.check_for_errors()
    except (OSError, ValueError, RuntimeError, TimeoutError) as e:
      raise self._write_failed(self._saving, e) from e

  def close(self) -> None:
    """Waits for pending saves and closes the manager; raises a failed save's error (after closing)."""
    error = None
    try:
      self.wait()
    except CheckpointWriteError as e:
      error = e
    try:
      self.manager.close()
    except (OSError, ValueError, RuntimeError, TimeoutError) as e:
      error = error or self._write_failed(self._saving, e)
    if error is not None:
      raise error


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
  device whatever device layout wrote the checkpoint; the shapes come from the saved config and vocabulary. A run
  with averaged SGD (``optimizer.averaging``) gives its average once averaging has started.
  """
  if not workdir_lib.checkpoint_dir(workdir).is_dir():
    raise CheckpointError(f"No checkpoints in {workdir_lib.checkpoint_dir(workdir)}; train first with "
                          f"python -m lstm_jax.main --config ... --workdir {workdir}.")
  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    chosen = choose_step(checkpointer, step)
    meta = checkpointer.read_meta(chosen)
    config = ml_collections.ConfigDict(meta["config"])
    vocab = Vocab.from_json(meta["vocab"])
    model = models.from_config(config.model, len(vocab))
    optimizer = optimizer_lib.make_optimizer(config.optimizer)
    averaging = config.optimizer.get("averaging", "none") != "none"
    state = jax.eval_shape(lambda: train_state_lib.create_train_state(model, optimizer, config.seed,
                                                                      config.data.batch_size, averaging))
    restored = checkpointer.restore_state(chosen, train_state_lib.abstract_saved_state(state),
                                          meta.get("checksums"))
  finally:
    checkpointer.close()
  average = restored["train"].get("average")
  if average is not None and int(average["count"]) > 0:  # averaged SGD: the average is the model
    return model, average["params"], vocab, config
  return model, restored["train"]["params"], vocab, config


def choose_step(checkpointer: Checkpointer, step: int | str | None) -> int:
  """The step ``load_params`` reads: ``step`` itself, the best (``"best"``) or the newest whose directory's
  number agrees with its saved step (``None``; a line names each one skipped)."""
  where = checkpointer.directory
  if step == "best":
    chosen = checkpointer.best_step()
    if chosen is None:
      raise CheckpointError(f"No checkpoint in {where} records a perplexity (written before that was saved, or "
                            f"only mid-epoch saves); pass --step N (steps: {checkpointer.all_steps()}) or leave "
                            f"--step out for the latest.")
    return chosen
  if step is None:
    chosen, notes = checkpointer.newest_usable()
    for note in notes:
      print(f"warning: skipping {note}.", flush=True)
    if chosen is not None:
      return chosen
  elif int(step) in checkpointer.all_steps():
    return int(step)
  raise CheckpointError(f"Checkpoint step {step!r} not found in {where}; available steps: "
                        f"{checkpointer.all_steps()}.")


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
