"""Metric writers (side effects at the edge): JSON lines in the workdir, TensorBoard event files when
``tensorboardX`` is installed, and a progress line on stdout. Only process 0 writes."""

from __future__ import annotations

import json
import math
from typing import Any

import jax
from absl import logging

from lstm_jax import workdir as workdir_lib


def _jsonable(value: Any) -> Any:
  value = float(value) if hasattr(value, "__float__") and not isinstance(value, (int, str)) else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class MetricWriter:
  """Appends ``{"step": ..., **scalars}`` to ``<workdir>/metrics.jsonl`` (and TensorBoard scalars)."""

  def __init__(self, workdir: workdir_lib.PathLike):
    self.active = jax.process_index() == 0
    self.path = workdir_lib.metrics_path(workdir)
    self._tensorboard = None
    if self.active:
      try:
        import tensorboardX  # optional
        self._tensorboard = tensorboardX.SummaryWriter(str(workdir_lib.path(workdir) / workdir_lib.TENSORBOARD_DIR))
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
      self._tensorboard = None

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> bool:
    self.close()
    return False

