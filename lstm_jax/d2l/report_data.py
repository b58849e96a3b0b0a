"""The report's committed data, ``report_data.json`` beside ``RESULTS.md``: everything the report is drawn from, so
``python -m lstm_jax.commands.report --notrain`` redraws the plots and rewrites RESULTS.md with no run directory.

Per row, in the report's row order, one entry of either kind:

- curves: ``{"date", "measure": [train_key, val_key], "runs": [per seed {"epochs": [E], "train": [E], "val": [E]
  (null where not logged; absent when never), "final": {"train", "val"?, "tokens_per_sec"?}, "wall_time_sec"}],
  "samples": [greedy texts of seed 0]}``. Perplexities are kept to 6 significant digits, wall times to 0.1 s and
  speeds to whole tokens/s; the report is always computed from these rounded values, so a redraw gives the same
  bytes.
- summary only: ``{"date", "summary": summary.json's entry, "samples", "kept": why}`` for a row whose per-epoch
  records were not kept (its numbers are reported, its curve is not drawn), plus ``"curve": {"date", "measure",
  "runs"}`` when fewer seeds were rerun than its numbers stand on (the plot draws those, the tables keep the numbers).

Top level: ``{"command": the report's command line, "rows": {name: entry}, "library": the scratch-vs-library
results, or null}``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from lstm_jax.d2l.rows import Row
from lstm_jax.d2l.summary import measure_keys

DATA_FILE = "report_data.json"


def _round(value: float | None, digits: int = 6) -> float | None:
  return None if value is None else float(f"{value:.{digits}g}")


def compact_runs(row: Row, runs: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
  """``(measure keys, per-seed compact runs)`` from finished runs (``runs.read_run``): only the two perplexities
  the row is judged and drawn on, at every logged epoch, and the final record's values the tables print."""
  train_key, val_key = measure_keys(row, runs)
  compact = []
  for run in runs:
    epochs = sorted(e for e, record in run["epochs"].items() if train_key in record)
    entry: dict[str, Any] = {"epochs": epochs, "train": [_round(run["epochs"][e][train_key]) for e in epochs]}
    if any(val_key in run["epochs"][e] for e in epochs):
      entry["val"] = [_round(run["epochs"][e].get(val_key)) for e in epochs]
    final = {"train": _round(run["final"][train_key])}
    if val_key in run["final"]:
      final["val"] = _round(run["final"][val_key])
    if "tokens_per_sec" in run["final"]:
      final["tokens_per_sec"] = float(round(run["final"]["tokens_per_sec"]))
    entry["final"] = final
    entry["wall_time_sec"] = round(float(run["wall_time_sec"]), 1)
    compact.append(entry)
  return [train_key, val_key], compact


def expand_runs(entry: dict[str, Any]) -> list[dict[str, Any]]:
  """A curves entry back in ``runs.read_run``'s form (``{"epochs": {epoch: record}, "final", "wall_time_sec"}``),
  the records holding only the measure's two keys."""
  train_key, val_key = entry["measure"]
  runs = []
  for compact in entry["runs"]:
    vals = compact.get("val", [None] * len(compact["epochs"]))
    epochs = {}
    for epoch, train, val in zip(compact["epochs"], compact["train"], vals):
      epochs[int(epoch)] = {train_key: train, **({val_key: val} if val is not None else {})}
    final = {train_key: compact["final"]["train"]}
    if "val" in compact["final"]:
      final[val_key] = compact["final"]["val"]
    if "tokens_per_sec" in compact["final"]:
      final["tokens_per_sec"] = compact["final"]["tokens_per_sec"]
    runs.append({"epochs": epochs, "final": final, "wall_time_sec": compact["wall_time_sec"]})
  return runs


def kept_summary(entry: dict[str, Any]) -> dict[str, Any]:
  """A summary-only entry's summary as ``summary.summarise`` returns it (integer epochs)."""
  summary = dict(entry["summary"])
  summary["at_epochs"] = {int(k): v for k, v in summary["at_epochs"].items()}
  return summary


def read(out_dir: pathlib.Path) -> dict[str, Any] | None:
  path = out_dir / DATA_FILE
  return json.loads(path.read_text()) if path.exists() else None


def write(out_dir: pathlib.Path, data: dict[str, Any]) -> None:
  """Writes ``data`` with one line per row (readable diffs when a row is rerun)."""
  def dump(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
  rows = ",\n".join(f"  {dump(name)}: {dump(entry)}" for name, entry in data["rows"].items())
  (out_dir / DATA_FILE).write_text(f'{{"command": {dump(data["command"])},\n"rows": {{\n{rows}\n}},\n'
                                   f'"library": {dump(data["library"])}}}\n')
