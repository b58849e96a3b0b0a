"""Judging the runs against the book: each row's numbers at the book's epochs (mean and std over seeds), the verdict,
and the Markdown tables of RESULTS.md."""

from __future__ import annotations

from typing import Any

import numpy as np

from lstm_jax.d2l.rows import Row

def _mean_std(values: list[float]) -> tuple[float, float]:
  array = np.asarray(values, np.float64)
  return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def measure_keys(row: Row, runs: list[dict[str, Any]]) -> tuple[str, str]:
  """The (train, val) metric keys that match the book's measure: d2l 1.x's per-batch means where every run logged
  them, else exp of the token-mean NLL."""
  keys = ("train_batch_perplexity_last_half", "val_batch_perplexity_mean")
  if row.batch_means and runs and all(keys[0] in r["final"] and keys[1] in r["final"] for r in runs):
    return keys
  return "train_perplexity", "val_perplexity"


def summarise(row: Row, runs: list[dict[str, Any]]) -> dict[str, Any]:
  """Ours at the book's epochs (mean, std over runs), final validation, time, speed and the verdict."""
  train_key, val_key = measure_keys(row, runs)
  at_epochs = {}
  for epoch in row.book:
    values = [r["epochs"][epoch][train_key] for r in runs if epoch in r["epochs"]]
    at_epochs[epoch] = _mean_std(values) if values else None
  final_epoch = max(row.book)
  val = [r["final"][val_key] for r in runs if val_key in r["final"]]
  speeds = [r["final"]["tokens_per_sec"] for r in runs if "tokens_per_sec" in r["final"]]
  summary = {"seeds": len(runs), "at_epochs": at_epochs, "val": _mean_std(val) if val else None,
             "measure": train_key,
             "wall_time_sec": _mean_std([r["wall_time_sec"] for r in runs]),
             "tokens_per_sec": float(np.mean(speeds)) if speeds else None}
  summary["verdict"] = verdict(row, at_epochs.get(final_epoch), summary["val"])
  return summary


def _within(row: Row, ours: float, book: float, spread: tuple[float, float] | None) -> bool:
  if row.decimals is not None:
    ours = round(ours, row.decimals)
  limit = spread[1] if spread else 1.1 * book
  return ours <= limit + 1e-9


def verdict(row: Row, final: tuple[float, float] | None, val: tuple[float, float] | None) -> str:
  if final is None:
    return "not run"
  ok = _within(row, final[0], row.book[max(row.book)], row.spread)
  if row.book_val is not None:
    ok = ok and val is not None and _within(row, val[0], row.book_val, row.spread_val)
  return "reproduced" if ok else "NOT reproduced"


def _fmt(value: float) -> str:
  return f"{value:.2f}" if value >= 10 else f"{value:.3f}"


def results_table(rows: list[Row], summaries: dict[str, dict[str, Any]]) -> list[str]:
  lines = ["| row | epoch | book | ours (mean ± std) | book val | ours val | seeds | wall time | tokens/s | verdict |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for row in rows:
    s = summaries.get(row.name)
    for i, (epoch, book) in enumerate(sorted(row.book.items())):
      last = epoch == max(row.book)
      ours = s and s["at_epochs"].get(epoch)
      cells = [row.name if i == 0 else "", str(epoch), _fmt(book),
               f"{_fmt(ours[0])} ± {ours[1]:.3f}" if ours else "-",
               _fmt(row.book_val) if last and row.book_val else "",
               f"{_fmt(s['val'][0])} ± {s['val'][1]:.3f}" if last and s and s["val"] else "",
               str(s["seeds"]) if s and i == 0 else "",
               f"{s['wall_time_sec'][0]:.0f} s" if s and i == 0 else "",
               f"{s['tokens_per_sec']:,.0f}" if s and i == 0 and s["tokens_per_sec"] else "",
               s["verdict"] if s and last else ("not run" if last else "")]
      lines.append("| " + " | ".join(cells) + " |")
  return lines


def summary_table(rows: list[Row], summaries: dict[str, dict[str, Any]],
                  dates: dict[str, str] | None = None) -> list[str]:
  """One line per row: the book's final number, ours (mean ± std), seeds, verdict, and (``dates``: row name ->
  day) the day of the row's runs."""
  dates = dates or {}
  header = "| row | epochs | book (train / val) | ours (mean ± std) | seeds | verdict |"
  lines = [header + (" runs of |" if dates else ""), "|---|---|---|---|---|---|" + ("---|" if dates else "")]
  for row in rows:
    s = summaries.get(row.name)
    final_epoch = max(row.book)
    book = _fmt(row.book[final_epoch]) + (f" / {_fmt(row.book_val)}" if row.book_val else "")
    ours = "-"
    if s and s["at_epochs"].get(final_epoch):
      mean, std = s["at_epochs"][final_epoch]
      ours = f"{_fmt(mean)} ± {std:.3f}" + (f" / {_fmt(s['val'][0])}" if row.book_val and s["val"] else "")
    lines.append(f"| {row.name} | {final_epoch} | {book} | {ours} | {s['seeds'] if s else 0} | "
                 f"{s['verdict'] if s else 'not run'} |" + (f" {dates.get(row.name, '-')} |" if dates else ""))
  return lines


def compute_time_table(rows: list[Row], summaries: dict[str, dict[str, Any]]) -> list[str]:
  """Training time of the reported runs (a row's mean wall time x its seeds) summed per table, scratch rows apart
  from library ("library") rows, in minutes of one worker process (one core): what a rerun from nothing costs,
  and what dominates it."""
  totals: dict[str, dict[str, float]] = {}
  for row in rows:
    kind = "library" if "library" in row.name else "scratch"
    s = summaries.get(row.name)
    minutes = s["wall_time_sec"][0] * s["seeds"] / 60 if s else 0.0
    group = row.name if row.slow else row.table  # a slow row (left out of its table's name) gets its own line
    totals.setdefault(group, {"scratch": 0.0, "library": 0.0})[kind] += minutes
  if len(totals) > 1:
    totals["all"] = {kind: sum(t[kind] for t in totals.values()) for kind in ("scratch", "library")}
  lines = ["| table | scratch rows | library rows | total | on 2 cores, at least |", "|---|---:|---:|---:|---:|"]
  for table, t in totals.items():
    total = t["scratch"] + t["library"]
    lines.append(f"| {table} | {t['scratch']:.1f} | {t['library']:.1f} | {total:.1f} | {total / 2:.1f} min |")
  return lines
