"""Writes the reproduction report: ``RESULTS.md``, ``summary.json``, one PNG per table and ``report_data.json``
(everything they are drawn from: ``lstm_jax.d2l.report_data``) into an output folder.

A row is *reproduced* when our mean final perplexity is at most the top of the book's run-to-run spread
(``book_tables.md`` section 6), or, where no spread exists, at most 10% above the book's number (lower is fine).
Prose about the rows (why a row misses, findings) lives in ``findings.md`` beside the report and is read from there.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

from lstm_jax.d2l import report_data
from lstm_jax.d2l.library_check import library_table
from lstm_jax.d2l.plots import plot_table
from lstm_jax.d2l.rows import ROWS, TABLES, Row
from lstm_jax.d2l.summary import compute_time_table, results_table, summarise, summary_table

FINDINGS_FILE = "findings.md"
DEFAULT_COMMAND = "python -m lstm_jax.commands.report"


def read_findings(path: pathlib.Path) -> tuple[dict[str, str], dict[str, str]]:
  """``(explanations of misses, notes)`` by row name from a findings file (``## miss: ROW`` / ``## note: ROW``
  sections); empty when the file does not exist."""
  found: dict[str, dict[str, str]] = {"miss": {}, "note": {}}
  if path.exists():
    for kind, name, text in re.findall(r"^## (miss|note): (\S+)\n(.*?)(?=^## |\Z)", path.read_text(), re.M | re.S):
      found[kind][name] = " ".join(text.split())
  return found["miss"], found["note"]


def _kept_notes(rows: list[Row], entries: dict[str, dict[str, Any]]) -> list[str]:
  """One line per row of a table kept from an earlier report: why, and what its plot shows."""
  lines = []
  for row in rows:
    entry = entries[row.name]
    if "kept" in entry:
      lines += [f"- **{row.name}** (kept): the numbers of the runs of {entry['date']}, not rerun for this report: "
                f"{entry['kept']} " + _kept_curve_note(row, entry), ""]
  return lines


def _kept_curve_note(row: Row, entry: dict[str, Any]) -> str:
  """What a kept row's plot shows: nothing, or the curve of the fewer seeds rerun with this report's code."""
  if "curve" not in entry:
    return "Its curve is not drawn: those runs' per-epoch records were not kept."
  curve, epoch = entry["curve"], max(row.book)
  finals = [run["train"][run["epochs"].index(epoch)] for run in curve["runs"] if epoch in run["epochs"]]
  seeds = len(curve["runs"])
  final = f": final perplexity {sum(finals) / len(finals):.3f} at epoch {epoch}" if finals else ""
  return (f"Its curve is a rerun of {seeds} seed{'s' if seeds > 1 else ''} on {curve['date']} with this report's "
          f"code{final} (the kept numbers: {entry['summary']['at_epochs'][str(epoch)][0]:.3f}).")


def _report_data(rows: list[Row], runs: dict[str, list[dict[str, Any]]], committed: dict[str, Any] | None,
                 samples: dict[str, list[str]], library: list[dict[str, Any]] | None, command: str,
                 date: str | None) -> dict[str, Any]:
  """The report's data (``report_data``'s format): each row from its finished runs in ``runs`` (dated ``date``, or
  the day its last run finished), else the committed entry, else empty (not run); ``library`` or, when None, the
  committed comparison. A committed row kept as numbers only (``"kept"``) keeps them when fewer seeds have
  finished than its numbers stand on: those runs become its ``"curve"``."""
  entries: dict[str, dict[str, Any]] = {}
  for row in rows:
    finished = runs.get(row.name)
    entry = (committed or {}).get("rows", {}).get(row.name, {})
    if finished:
      measure, compact = report_data.compact_runs(row, finished)
      run_date = date or max(run["date"] for run in finished)
      if "kept" in entry and len(finished) < entry["summary"]["seeds"]:
        entry = {**entry, "curve": {"date": run_date, "measure": measure, "runs": compact}}
      else:
        entry = {"date": run_date, "measure": measure, "runs": compact, "samples": samples.get(row.name, [])}
    entries[row.name] = entry
  if library is None and committed:
    library = committed["library"]
  return {"command": command, "rows": entries, "library": library}


def _header_lines(command: str, entries: dict[str, dict[str, Any]], dates: dict[str, str]) -> list[str]:
  """The title and the paragraph on how the report was made: its command, its runs' days, what the columns mean."""
  rerun = sorted({date for name, date in dates.items() if "kept" not in entries[name]})
  runs_date = ""
  if rerun:
    runs_date = f"Runs of {rerun[0]}" + (f" to {rerun[-1]}" if len(rerun) > 1 else "")
    kept = [name for name in dates if "kept" in entries[name]]
    runs_date += (f" (each row's day in the summary), except {len(kept)} row{'s' if len(kept) > 1 else ''} kept "
                  f"from an earlier report, as the note under {'their' if len(kept) > 1 else 'its'} table says. "
                  if kept else " (each row's day in the summary). ")
  return ["# D2L perplexity tables, reproduced", "",
          f"Generated by `{command}` (and redrawn from `{report_data.DATA_FILE}` beside it by `--notrain` with no "
          f"run directory). {runs_date}Book numbers: "
          "`lstm_jax/d2l/book_tables.md` section 0; spread: section 6. *Reproduced*: our mean final perplexity is at "
          "most the top of the book's spread, or at most 10% above the book where no spread exists (lower is fine). "
          "Perplexity is training perplexity of the epoch (the book's quantity; for d2l 1.x, as its board shows "
          "it, the mean of per-batch perplexities over the last half epoch, and over the validation batches, "
          "where the runs logged them); tokens/s over the last logging "
          "period; wall time of the whole run (compilation included; every session of a resumed run).", ""]


def _compute_time_lines(rows: list[Row], summaries: dict[str, dict[str, Any]]) -> list[str]:
  return ["## Compute time", "",
          "Minutes of training summed over the runs of this report (each run's wall time, compilation "
          "included; a row kept from an earlier report counts with its own runs' times). The report trains "
          "`--jobs` runs at a time, each on a core of its own, so rerunning them from nothing on two cores "
          "takes about half the total or more.", "",
          *compute_time_table(rows, summaries), ""]


def _table_lines(table: str, title: str, table_rows: list[Row], summaries: dict[str, dict[str, Any]],
                 entries: dict[str, dict[str, Any]], runs: dict[str, list[dict[str, Any]]],
                 explanations: dict[str, str], notes: dict[str, str], out_dir: pathlib.Path) -> list[str]:
  """One book table: its results, the explanation of each row not reproduced, the notes, and its plot (written to
  ``out_dir``, or an earlier plot removed when no row of it has curves now)."""
  lines = [f"## {title}", "", *results_table(table_rows, summaries), ""]
  missed = [r for r in table_rows if r.name in summaries and summaries[r.name]["verdict"] == "NOT reproduced"]
  for row in missed:
    lines += [f"- **{row.name}**: " + explanations.get(row.name, "no explanation recorded yet."), ""]
  measures = {summaries[r.name]["measure"] for r in table_rows if r.name in summaries}
  if measures - {"train_perplexity"}:
    lines += [f"- Ours measured as the book: {', '.join(sorted(measures))} (train); the val column likewise.", ""]
  for row in table_rows:
    if row.name in notes and row.name in summaries:
      lines += [f"- **{row.name}** (note): " + notes[row.name], ""]
  lines += _kept_notes(table_rows, entries)
  png = out_dir / f"{table}.png"
  if any(runs.get(r.name) for r in table_rows):
    curve_seeds = {r.name: len(runs[r.name]) for r in table_rows if "curve" in entries[r.name]}
    plot_table(table, table_rows, runs, png,
               labels={name: f"{name} ({n} seed{'s' if n > 1 else ''})" for name, n in curve_seeds.items()})
    lines += [f"![{table}]({table}.png)", ""]
  else:
    png.unlink(missing_ok=True)  # an earlier report's plot of rows that have no curves now
  return lines


def _samples_lines(samples: dict[str, list[str]]) -> list[str]:
  lines = ["## Generated text (greedy, seed 0, the book's prefixes)", ""]
  for name, texts in samples.items():
    lines += [f"- **{name}**"] + [f"  - `{text}`" for text in texts]
  return lines + [""]


def _library_lines(library: list[dict[str, Any]]) -> list[str]:
  return ["## Scratch vs library cells: same seed, same weights", "",
          "The scratch model's weights are converted into the Flax cell's layout (`library_model."
          "from_scratch_params`), both train on the same minibatches of the tm2019 LSTM row (SGD lr 100, clip "
          "0.01, hidden 256, state carried). The D2L GRU (reset gate before the matmul) has no Flax counterpart; "
          "the pair compares `gru_reset_after` with `nn.GRUCell`. The scratch model runs its default "
          "recurrence (the LSTM: the hand-written fused backward). Speeds: steady-state training tokens/s after "
          "compilation, on this machine, while other jobs may share it.", "",
          *library_table(library), ""]


def write_report(rows: list[Row], runs: dict[str, list[dict[str, Any]]], out_dir: pathlib.Path,
                 samples: dict[str, list[str]] | None = None, library: list[dict[str, Any]] | None = None,
                 command: str = "", date: str | None = None) -> dict[str, dict[str, Any]]:
  """Writes ``RESULTS.md``, ``summary.json``, ``report_data.json`` and one PNG per table into ``out_dir``;
  returns the per-row summaries.

  A row with finished runs in ``runs`` is reported from them (dated ``date``, default the UTC day its last run
  finished); a row without comes from the committed ``report_data.json`` in ``out_dir`` where that holds it
  (a kept row with fewer rerun seeds: see ``_report_data``). When no row of ``rows`` has a
  finished run and ``out_dir`` holds committed data, the report is redrawn from that data alone (its rows,
  samples, library comparison and command line; ``rows``, ``samples``, ``library`` and ``command`` are not
  used), so ``--notrain`` with no run directory rewrites the committed files unchanged.
  """
  out_dir.mkdir(parents=True, exist_ok=True)
  committed = report_data.read(out_dir)
  if committed is not None and not any(runs.get(row.name) for row in rows):
    data = committed
  else:
    data = _report_data(rows, runs, committed, samples or {}, library, command or DEFAULT_COMMAND, date)
  report_data.write(out_dir, data)
  rows = [ROWS[name] for name in data["rows"]]
  entries = data["rows"]
  runs = {name: report_data.expand_runs(entry.get("curve", entry)) for name, entry in entries.items()
          if "runs" in entry.get("curve", entry)}
  summaries = {}
  for row in rows:
    if "summary" in entries[row.name]:
      summaries[row.name] = report_data.kept_summary(entries[row.name])
    elif row.name in runs:
      summaries[row.name] = summarise(row, runs[row.name])
  samples = {name: entry["samples"] for name, entry in entries.items() if entry.get("samples")}
  dates = {name: entry["date"] for name, entry in entries.items() if entry}
  explanations, notes = read_findings(out_dir / FINDINGS_FILE)
  lines = _header_lines(data["command"], entries, dates)
  lines += ["## Summary", "", *summary_table(rows, summaries, dates), ""]
  if summaries:
    lines += _compute_time_lines(rows, summaries)
  for table, title in TABLES.items():
    table_rows = [r for r in rows if r.table == table]
    if table_rows:
      lines += _table_lines(table, title, table_rows, summaries, entries, runs, explanations, notes, out_dir)
  if samples:
    lines += _samples_lines(samples)
  if data["library"]:
    lines += _library_lines(data["library"])
  (out_dir / "RESULTS.md").write_text("\n".join(lines))
  (out_dir / "summary.json").write_text(json.dumps(
      {name: {**s, "at_epochs": {str(k): v for k, v in s["at_epochs"].items()}, "runs_date": entries[name]["date"]}
       for name, s in summaries.items()}, indent=1))
  return summaries
