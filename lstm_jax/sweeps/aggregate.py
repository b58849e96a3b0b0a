"""Turn a sweep's workdirs into Markdown tables and PNG plots:  ``python -m lstm_jax.commands.aggregate --sweep_dir
runs/sweeps/hidden``  writes there RESULTS.md (one row per run; with several seeds also their mean and spread),
curves.png (validation per epoch) and, when one value is swept, plot.png (the final metric against it, one line per
cell type).
"""

from __future__ import annotations

import json
import pathlib
import statistics
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
      records = workdir_lib.read_metrics(workdir)
      final = [r for r in records if r.get("final")]
      config = _flatten(workdir_lib.read_config(workdir) or {}) if final else {}
    except (workdir_lib.MetricsLogError, ValueError, KeyError) as e:  # KeyError: a config.json without "config"
      print(f"warning: skipping {workdir.name}: {e}", flush=True)
      continue
    if not final:
      continue
    row = {"run": workdir.name, "workdir": workdir, **config, **{f"final.{k}": v for k, v in final[-1].items()}}
    if (wall_time := workdir_lib.training_time(records)) is not None:
      row["final.wall_time_sec"] = wall_time  # every session of a resumed run
    rows.append(row)
  if not rows:
    raise ValueError(f"No finished runs under {sweep_dir}; run the sweep first.")
  config_keys = [k for k in rows[0] if not k.startswith("final.") and k not in ("run", "workdir", "data.data_dir")]
  varying = [k for k in config_keys if len({str(r.get(k)) for r in rows}) > 1]
  rows.sort(key=lambda r: tuple(_number_first(r.get(k)) for k in varying))
  return rows, varying


def markdown_table(rows: list[dict[str, Any]], varying: list[str]) -> str:
  """One row per run: the varying config values, the final train and validation perplexity (and bits per
  character when the runs logged them) and the wall time."""
  metrics = ["train_perplexity", "val_perplexity"] + (["train_bpc", "val_bpc"] if _unit(rows) == "bpc" else [])
  columns = varying + [m.replace("_", " ") for m in metrics] + ["wall time (s)"]
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for r in rows:
    values = [r.get(f"final.{m}") for m in metrics]
    cells = [str(r.get(k)) for k in varying] + [f"{v:.3f}" if isinstance(v, float) else "-" for v in values]
    lines.append("| " + " | ".join(cells + [f"{r.get('final.wall_time_sec', float('nan')):.1f}"]) + " |")
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


def _mean_std(values: list[float], digits: int = 3) -> str:
  """``mean +- sample std`` with ``digits`` decimals (thousands separated; the std only with two or more values)."""
  values = [float(v) for v in values if isinstance(v, (int, float))]
  if not values:
    return "-"
  if len(values) == 1:
    return f"{values[0]:,.{digits}f}"
  return f"{statistics.mean(values):,.{digits}f} +- {statistics.stdev(values):,.{digits}f}"


def _unit(rows: list[dict[str, Any]]) -> str:
  """``bpc`` when every run logged bits per character (character tokens), else ``perplexity``."""
  return "bpc" if all("final.val_bpc" in r or "final.train_bpc" in r for r in rows) else "perplexity"


def seed_groups(rows: list[dict[str, Any]], varying: list[str]) -> dict[tuple, list[dict[str, Any]]]:
  """The runs grouped by every varying config key but ``seed`` (one group per configuration)."""
  keys = [k for k in varying if k != "seed"]
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for r in rows:
    groups.setdefault(tuple(str(r.get(k)) for k in keys), []).append(r)
  return groups


def seed_table(rows: list[dict[str, Any]], varying: list[str]) -> str:
  """Mean and spread over seeds per configuration: train and validation (bits per character on character
  corpora, else perplexity; the last epoch's), the best validation of each run, wall time and tokens/s."""
  unit, keys = _unit(rows), [k for k in varying if k != "seed"]
  columns = keys + ["seeds", f"train {unit}", f"val {unit}", f"best val {unit}", "wall time (s)", "tokens/s"]
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for group, runs in seed_groups(rows, varying).items():
    best = [min(curve(r["workdir"], f"val_{unit}")[1], default=float("nan")) for r in runs]
    cells = list(group) + [str(len(runs)), _mean_std([r.get(f"final.train_{unit}") for r in runs]),
                           _mean_std([r.get(f"final.val_{unit}") for r in runs]), _mean_std(best),
                           _mean_std([r.get("final.wall_time_sec") for r in runs], digits=0),
                           _mean_std([r.get("final.tokens_per_sec") for r in runs], digits=0)]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def curve(workdir: pathlib.Path, metric: str) -> tuple[list[int], list[float]]:
  """``(epochs, values)`` of ``metric`` in a run's epoch records."""
  records = [r for r in workdir_lib.read_metrics(workdir) if "epoch" in r and not r.get("final") and metric in r]
  return [r["epoch"] for r in records], [r[metric] for r in records]


def curves_plot(rows: list[dict[str, Any]], varying: list[str], path: pathlib.Path) -> None:
  """Validation (bits per character, else perplexity) per epoch: one colour per configuration, one line per seed."""
  unit = _unit(rows)
  figure, axis = plots.figure(6.4, 4.4)
  names = [k.split(".")[-1] for k in varying if k != "seed"]
  for index, (group, runs) in enumerate(seed_groups(rows, varying).items()):
    label = ", ".join(f"{name}={value}" for name, value in zip(names, group)) or "runs"
    for r in runs:
      epochs, values = curve(r["workdir"], f"val_{unit}")
      axis.plot(epochs, values, marker="o", color=f"C{index}", alpha=0.8, label=label)
      label = None
  axis.set_xlabel("epoch")
  axis.set_ylabel(f"validation {unit}")
  axis.grid(True, alpha=0.3)
  axis.legend()
  plots.save(figure, path)


def aggregate(sweep_dir) -> str:
  """Writes ``RESULTS.md`` and ``curves.png`` (the validation curves) into ``sweep_dir``, with several seeds per
  configuration also the mean and spread over seeds, and ``plot.png`` (the final metric against the swept value)
  when one value is swept; returns the tables."""
  sweep_dir = pathlib.Path(sweep_dir)
  rows, varying = collect(sweep_dir)
  table = markdown_table(rows, varying)
  if "seed" in varying:
    table = seed_table(rows, varying) + "\n" + table
  curves_plot(rows, varying, sweep_dir / "curves.png")
  (sweep_dir / "RESULTS.md").write_text(table)
  if len(set(varying) - {"model.cell", "seed"}) <= 1:  # one swept value: the final metric against it
    plot(rows, varying, sweep_dir / "plot.png")
  return table
