"""Metric writers (side effects at the edge): JSON lines in the workdir, TensorBoard event files when
``tensorboardX`` is installed, and a progress line on stdout. Only process 0 writes."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import jax
from absl import logging


def _jsonable(value: Any) -> Any:
  value = float(value) if hasattr(value, "__float__") and not isinstance(value, (int, str)) else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class MetricWriter:
  """Appends ``{"step": ..., **scalars}`` to ``<workdir>/metrics.jsonl`` (and TensorBoard scalars)."""

  def __init__(self, workdir: str | pathlib.Path, filename: str = "metrics.jsonl"):
    self.active = jax.process_index() == 0
    self.path = pathlib.Path(workdir) / filename
    self._tensorboard = None
    if self.active:
      try:
        import tensorboardX  # optional
        self._tensorboard = tensorboardX.SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))
      except ImportError:
        logging.info("tensorboardX not installed: metrics go to %s only.", self.path)

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    if not self.active:
      return
    record = {"step": int(step), **{k: _jsonable(v) for k, v in scalars.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(record, ensure_ascii=False) + "\n")
    if self._tensorboard is not None:
      for key, value in scalars.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
          self._tensorboard.add_scalar(key, value, step)

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


def read_metrics(path: str | pathlib.Path) -> list[dict[str, Any]]:
  """Reads a ``metrics.jsonl`` file back as a list of records."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
