"""One PNG per table: perplexity against epoch, ours (lines) against the book's points (markers)."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
from matplotlib import ticker

from lstm_jax.d2l.rows import TABLES, Row
from lstm_jax.d2l.summary import measure_keys
from lstm_jax.train import plots

def _draw_rows(ax, rows: list[Row], runs: dict[str, list[dict[str, Any]]], first_color: int,
               labels: dict[str, str]) -> None:
  for index, row in enumerate(rows, start=first_color):
    color = f"C{index % 10}"
    row_runs = runs[row.name]
    train_key, val_key = measure_keys(row, row_runs)  # the measure the tables judge the row on
    epochs = sorted(set.intersection(*(set(r["epochs"]) for r in row_runs)))
    train_style, val_style = dict(lw=1.4, label=labels.get(row.name, row.name)), dict(lw=1.1, ls="--")
    for key, style in ((train_key, train_style), (val_key, val_style)):
      key_epochs = [e for e in epochs if all(key in r["epochs"][e] for r in row_runs)]
      if key_epochs:
        ax.plot(key_epochs, [np.mean([r["epochs"][e][key] for r in row_runs]) for e in key_epochs], color=color,
                **style)
    ax.plot(list(row.book), list(row.book.values()), "o", color=color, ms=6, mfc="none")
    if row.book_val is not None:
      ax.plot([max(row.book)], [row.book_val], "s", color=color, ms=6, mfc="none")
  plots.plain_log_y(ax)
  low, high = ax.get_ylim()
  if high / low < 10:  # less than a decade: label more than the 1-2-5 ticks, else two labels may be all there is
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)))
  ax.set_xlabel("epoch")
  ax.set_ylabel("perplexity")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(ncol=2 if len(rows) > 4 else 1)


def plot_table(table: str, rows: list[Row], runs: dict[str, list[dict[str, Any]]], path: pathlib.Path,
               labels: dict[str, str] | None = None) -> None:
  """Perplexity against epoch: our seed-mean curves (lines) and the book's points (markers), log scale; the legend
  names each row (``labels`` overrides a row's name). A slow row (``Row.slow``: the 3000-epoch deep LSTM) gets a
  panel of its own so it does not squeeze the rest."""
  drawn = [r for r in rows if runs.get(r.name)]  # rows not run yet stay out of the plot
  long_rows = [r for r in drawn if r.slow]
  short_rows = [r for r in drawn if r not in long_rows]
  panels = [short_rows, long_rows] if long_rows and short_rows else [drawn]
  fig, axes = plots.figure(7.5 * len(panels) if len(panels) > 1 else 8.0, 5.0, ncols=len(panels), squeeze=False)
  for ax, panel_rows, first_color in zip(axes[0], panels, (0, len(panels[0]))):
    _draw_rows(ax, panel_rows, runs, first_color, labels or {})
  fig.suptitle(f"{TABLES[table]}\nlines: ours (train; dashed: val), markers: book")
  plots.save(fig, path)
