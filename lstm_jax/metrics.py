"""Metric writers (side effects at the edge); only process 0 writes.

- ``metrics.jsonl`` in the workdir: one JSON record per logging epoch and one final record (``"final": 1``), the
  plain-text log that the report, the aggregation and resumption read;
- TensorBoard event files under ``<workdir>/tensorboard`` through ``tensorboardX``: scalars under hierarchical tags
  (``train/loss``, ``train/perplexity``, ``val/perplexity``, ``perf/tokens_per_sec``, ...), the config as
  hyperparameters with the final metrics, and the generated samples as text;
- ``perplexity.png`` in the workdir (``lstm_jax.plots.plot_run``), redrawn at each logging epoch.

Use it as a context manager so it is closed on every exit path (a failed run included).
"""

from __future__ import annotations

import json
import math
from typing import Any

import jax
import tensorboardX

from lstm_jax import workdir as workdir_lib

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


class MetricWriter:
  """Writes a run's records to ``metrics.jsonl`` and TensorBoard."""

  def __init__(self, workdir: workdir_lib.PathLike):
    self.active = jax.process_index() == 0
    self.path = workdir_lib.metrics_path(workdir)
    self._tensorboard = None
    if self.active:
      self._tensorboard = tensorboardX.SummaryWriter(str(workdir_lib.path(workdir) / workdir_lib.TENSORBOARD_DIR))

  def _append(self, record: dict[str, Any]) -> None:
    with self.path.open("a") as f:
      f.write(json.dumps(record, ensure_ascii=False) + "\n")

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    """One epoch's record: a JSON line and one TensorBoard scalar per finite number."""
    if not self.active:
      return
    self._append({"step": int(step), **{k: _jsonable(v) for k, v in scalars.items()}})
    for key, value in scalars.items():
      if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        self._tensorboard.add_scalar(tag(key), value, step)

  def write_texts(self, step: int, texts: dict[str, str]) -> None:
    """Text summaries (generated samples) under ``samples/<name>``."""
    if self.active:
      for name, text in texts.items():
        self._tensorboard.add_text(f"samples/{name}", text, step)

  def write_final(self, step: int, summary: dict[str, Any], config_dict: dict[str, Any] | None = None) -> None:
    """The run's final record, once: a JSON line with ``"final": 1``, and the config as TensorBoard
    hyperparameters with the final numbers as their metrics."""
    if not self.active:
      return
    self._append({"step": int(step), "final": 1, **{k: _jsonable(v) for k, v in summary.items()}})
    if config_dict is not None:
      numbers = {f"final/{k}": float(v) for k, v in summary.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
      self._tensorboard.add_hparams(_flat(config_dict), numbers, name="hparams", global_step=int(step))

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()
      self._tensorboard = None

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> bool:
    self.close()
    return False
