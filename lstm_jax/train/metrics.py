"""Metric writers (side effects at the edge); only process 0 writes.

- ``metrics.jsonl`` in the workdir: one JSON record per logging epoch and one final record (``"final": 1``), the
  plain-text log that the report, the aggregation and resumption read;
- TensorBoard event files under ``<workdir>/tensorboard``, the summaries made by ``tensorboardX`` and written in
  the calling thread (tensorboardX's own writer thread, once dead of a full disk, blocks its caller forever):
  scalars under hierarchical tags (``train/loss``, ``train/perplexity``, ``val/perplexity``,
  ``perf/tokens_per_sec``, ...), the config as hyperparameters with the final metrics, and the generated samples
  as text; flushed at every epoch (``flush``) and on close;
- ``perplexity.png`` in the workdir (``lstm_jax.train.plots.plot_run``), redrawn at each logging epoch.

Use it as a context manager so it is closed on every exit path (a failed run included). A file that cannot be
written is a ``workdir.WriteError`` naming it, raised at once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from typing import Any

import jax
from tensorboardX import summary as tb_summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.record_writer import directory_check

from lstm_jax.train import workdir as workdir_lib

# Record keys -> TensorBoard tags; other keys go under "train/", "val/" by their prefix, else "other/".
TAGS = {"train_loss": "train/loss", "train_perplexity": "train/perplexity",
        "train_batch_perplexity_last_half": "train/batch_perplexity_last_half",
        "val_nll": "val/loss", "val_perplexity": "val/perplexity", "tokens_per_sec": "perf/tokens_per_sec",
        "elapsed_sec": "perf/elapsed_sec", "epoch": "progress/epoch"}


def tag(key: str) -> str:
  if key in TAGS:
    return TAGS[key]
  for prefix in ("train_", "val_"):
    if key.startswith(prefix):
      return f"{prefix[:-1]}/{key[len(prefix):]}"
  return f"other/{key}"


def _jsonable(value: Any) -> Any:
  value = float(value) if hasattr(value, "__float__") and not isinstance(value, (int, str)) else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out: dict[str, Any] = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
  return out


class EventFile:
  """One TensorBoard events file under ``logdir``, written synchronously: a failed write raises in the caller as
  a ``workdir.WriteError`` naming the file. ``purge_step``: a resumed run's first step, so TensorBoard drops the
  events an earlier session logged from that step on."""

  def __init__(self, logdir: str, purge_step: int | None = None):
    self.logdir = logdir
    self._writer = None
    self._guarded(self._open)
    if purge_step is not None:
      self.add(Event(step=int(purge_step), session_log=SessionLog(status=SessionLog.START)))

  def _open(self):
    directory_check(self.logdir)
    self._writer = EventsWriter(os.path.join(self.logdir, "events"))

  @property
  def name(self) -> str:
    return self._writer._file_name if self._writer is not None else os.path.join(self.logdir, "events.out.tfevents.*")

  def _guarded(self, action, *args):
    try:
      return action(*args)
    except OSError as e:
      raise workdir_lib.write_failed(self.name, e) from e

  def add(self, event: Event) -> None:
    event.wall_time = event.wall_time or time.time()
    self._guarded(self._writer.write_event, event)

  def add_summary(self, summary, step: int) -> None:
    self.add(Event(summary=summary, step=int(step)))

  def flush(self) -> None:
    self._guarded(self._writer.flush)

  def close(self) -> None:
    """Flushes and closes the file (raising a failed flush once; the file is closed either way)."""
    if self._writer is not None:
      writer, self._writer = self._writer, None
      try:
        writer.close()
      except OSError as e:
        raise workdir_lib.write_failed(writer._file_name, e) from e


class MetricWriter:
  """Writes a run's records to ``metrics.jsonl`` and TensorBoard."""

  def __init__(self, workdir: workdir_lib.PathLike, purge_step: int | None = None):
    self.active = jax.process_index() == 0
    self.path = workdir_lib.metrics_path(workdir)
    self.logdir = str(workdir_lib.path(workdir) / workdir_lib.TENSORBOARD_DIR)
    self._tensorboard = None
    if self.active:
      self._tensorboard = EventFile(self.logdir, purge_step)

  def _append(self, record: dict[str, Any]) -> dict[str, Any]:
    try:
      with self.path.open("a") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
    except OSError as e:
      raise workdir_lib.write_failed(self.path, e) from e
    return record

  def write(self, step: int, scalars: dict[str, Any]) -> dict[str, Any]:
    """One epoch's record: a JSON line and one TensorBoard scalar per finite number; returns the record as
    written (on every process: the run keeps its log to save it with the checkpoints)."""
    record = {"step": int(step), **{k: _jsonable(v) for k, v in scalars.items()}}
    if not self.active:
      return record
    self._append(record)
    for key, value in scalars.items():
      if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        self._tensorboard.add_summary(tb_summary.scalar(tag(key), value), step)
    return record

  def write_texts(self, step: int, texts: dict[str, str]) -> None:
    """Text summaries (generated samples) under ``samples/<name>``."""
    if self.active:
      for name, text in texts.items():
        self._tensorboard.add_summary(tb_summary.text(f"samples/{name}", text), step)

  def write_final(self, step: int, summary: dict[str, Any], config_dict: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The run's final record, once: a JSON line with ``"final": 1``, and the config as TensorBoard
    hyperparameters (under ``tensorboard/hparams``) with the final numbers as their metrics."""
    record = {"step": int(step), "final": 1, **{k: _jsonable(v) for k, v in summary.items()}}
    if not self.active:
      return record
    self._append(record)
    if config_dict is not None:
      numbers = {f"final/{k}": float(v) for k, v in summary.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
      hparams = EventFile(os.path.join(self.logdir, "hparams"))
      try:
        for part in tb_summary.hparams(_flat(config_dict), numbers):
          hparams.add_summary(part, step)
        for key, value in numbers.items():
          hparams.add_summary(tb_summary.scalar(key, value), step)
      finally:
        hparams.close()
    return record

  def flush(self) -> None:
    """Writes the buffered TensorBoard events out (every epoch: a killed run loses at most the epoch's)."""
    if self._tensorboard is not None:
      self._tensorboard.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      tensorboard, self._tensorboard = self._tensorboard, None
      tensorboard.close()

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, exc_type, *exc) -> bool:
    if exc_type is None:
      self.close()
    else:  # the run's own error is the news; a second failure to flush would only hide it
      with contextlib.suppress(OSError):
        self.close()
    return False
