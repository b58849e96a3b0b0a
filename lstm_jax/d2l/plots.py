"""One PNG per table: perplexity against epoch, ours (lines) against the book's points (markers)."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from lstm_jax.d2l.rows import TABLES, Row
from lstm_jax.d2l.summary import measure_keys

def plot_table(table: str, rows: list[Row], runs: dict[str, list[dict[str, Any]]], path: pathlib.Path) -> None:
  """Perplexity against epoch: our seed-mean curves (lines) and the book's points (markers), log scale."""
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=80)
  for index, row in enumerate(r for r in rows if runs.get(r.name)):  # rows not run yet stay out of the plot
    color = f"C{index % 10}"
    row_runs = runs[row.name]
    if row_runs:
      train_key, val_key = measure_keys(row, row_runs)  # the measure the tables judge the row on
      epochs = sorted(set.intersection(*(set(r["epochs"]) for r in row_runs)))
      for key, style in ((train_key, dict(lw=1.2, label=row.name.split("_", 1)[1])), (val_key, dict(lw=1.0, ls="--"))):
        key_epochs = [e for e in epochs if all(key in r["epochs"][e] for r in row_runs)]
        if key_epochs:
          ax.plot(key_epochs, [np.mean([r["epochs"][e][key] for r in row_runs]) for e in key_epochs], color=color,
                  **style)
    ax.plot(list(row.book), list(row.book.values()), "o", color=color, ms=5, mfc="none")
    if row.book_val is not None:
      ax.plot([max(row.book)], [row.book_val], "s", color=color, ms=5, mfc="none")
  ax.set_yscale("log")
  ax.set_xlabel("epoch")
  ax.set_ylabel("perplexity")
  ax.set_title(f"{TABLES[table]}\nlines: ours (train; dashed: val), markers: book", fontsize=9)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
