"""Turn a sweep's workdirs into a Markdown table and a PNG plot (perplexity against the swept value, one line per
cell type):  ``python -m lstm_jax.commands.aggregate --sweep_dir runs/sweeps/hidden``  (writes RESULTS.md and plot.png there).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from lstm_jax.train import plots
from lstm_jax.train import workdir as workdir_lib

def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, tuple)) else value
  return out


def collect(sweep_dir: str | pathlib.Path) -> tuple[list[dict[str, Any]], list[str]]:
  """One row per finished run (config fields flattened + final metrics) and the config keys that vary; a run
  whose ``metrics.jsonl`` or ``config.json`` is damaged is skipped with one line naming it."""
  rows = []
  for workdir in sorted(p for p in pathlib.Path(sweep_dir).iterdir() if (p / "metrics.jsonl").exists()):
    try:
      final = [r for r in workdir_lib.read_metrics(workdir) if r.get("final")]
      config = _flatten(workdir_lib.read_config(workdir) or {}) if final else {}
    except (workdir_lib.MetricsLogError, ValueError, KeyError) as e:  # KeyError: a config.json without "config"
      print(f"warning: skipping {workdir.name}: {e}", flush=True)
      continue
    if not final:
      continue
    rows.append({"run": workdir.name, **config, **{f"final.{k}": v for k, v in final[-1].items()}})
  if not rows:
    raise ValueError(f"No finished runs under {sweep_dir}; run the sweep first.")
  config_keys = [k for k in rows[0] if not k.startswith("final.") and k not in ("run", "data.data_dir")]
  varying = [k for k in config_keys if len({str(r.get(k)) for r in rows}) > 1]
  rows.sort(key=lambda r: tuple(_number_first(r.get(k)) for k in varying))
  return rows, varying


def markdown_table(rows: list[dict[str, Any]], varying: list[str]) -> str:
  columns = varying + ["train perplexity", "val perplexity", "wall time (s)"]
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for r in rows:
    val = r.get("final.val_perplexity")
    cells = [str(r.get(k)) for k in varying] + [f"{r['final.train_perplexity']:.3f}",
                                                 f"{val:.3f}" if isinstance(val, float) else "-",
                                                 f"{r.get('final.wall_time_sec', float('nan')):.1f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _number_first(value: Any) -> tuple:
  """Sort key: numbers (and numeric strings) by value, before other values by text."""
  try:
    return (0, float(value), "")
  except (TypeError, ValueError):
    return (1, 0.0, str(value))


def swept_key(varying: list[str]) -> str:
  return next((k for k in varying if k != "model.cell"), "model.cell")


def plot(rows: list[dict[str, Any]], varying: list[str], path: pathlib.Path) -> None:
  """Final perplexity against the swept value, one line per cell type; log y (perplexities), numeric x in
  numeric order (log x when the values span a decade)."""
  swept = swept_key(varying)
  metric = "final.val_perplexity" if all(isinstance(r.get("final.val_perplexity"), float) for r in rows) \
      else "final.train_perplexity"
  figure, axis = plots.figure(6.4, 4.4)
  numeric = all(_number_first(r[swept])[0] == 0 for r in rows)
  for cell in sorted({r["model.cell"] for r in rows}):
    points = sorted(((r[swept], r[metric]) for r in rows if r["model.cell"] == cell),
                    key=lambda point: _number_first(point[0]))
    xs = [float(x) for x, _ in points] if numeric else [str(x) for x, _ in points]
    axis.plot(xs, [y for _, y in points], marker="o", label=cell)
  if numeric and plots.spans_a_decade([float(r[swept]) for r in rows]):
    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(plots.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
  plots.plain_log_y(axis)
  axis.set_xlabel(swept)
  axis.set_ylabel(metric.removeprefix("final.").replace("_", " "))
  axis.grid(True, which="both", alpha=0.3)
  axis.legend(title="cell")
  plots.save(figure, path)


def aggregate(sweep_dir) -> str:
  """Writes ``RESULTS.md`` and ``plot.png`` into ``sweep_dir``; returns the table."""
  sweep_dir = pathlib.Path(sweep_dir)
  rows, varying = collect(sweep_dir)
  table = markdown_table(rows, varying)
  (sweep_dir / "RESULTS.md").write_text(table)
  plot(rows, varying, sweep_dir / "plot.png")
  return table
