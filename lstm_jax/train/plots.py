"""PNG plots that read at the size they are saved: 9 pt text or larger, plain-number log ticks (``20``, not
``2x10^1``), log y when the values span a decade. ``plot_run`` draws one run's perplexity per epoch (the file
``perplexity.png`` a run rewrites at each logging epoch, like D2L's animator)."""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from lstm_jax.train import workdir as workdir_lib  # noqa: E402

FONT_PT = 10
RUN_PLOT = "perplexity.png"


def figure(width: float = 7.0, height: float = 4.5, ncols: int = 1, **kwargs):
  """A figure at 100 dpi with this module's font sizes (``(fig, axes)`` as ``plt.subplots`` returns them)."""
  plt.rcParams.update({"font.size": FONT_PT, "legend.fontsize": 9, "xtick.labelsize": 9, "ytick.labelsize": 9,
                       "axes.titlesize": FONT_PT + 1})
  return plt.subplots(1, ncols, figsize=(width, height), dpi=100, **kwargs)


def spans_a_decade(values: Sequence[float]) -> bool:
  finite = [v for v in values if v is not None and v > 0 and v != float("inf")]
  return bool(finite) and max(finite) / min(finite) >= 10


def plain_log_y(axis) -> None:
  """Log y axis with ticks written as plain numbers (1, 2, 5, 10, 20, ...)."""
  axis.set_yscale("log")
  formatter = ticker.FuncFormatter(lambda y, _: f"{y:g}")
  axis.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
  axis.yaxis.set_major_formatter(formatter)
  axis.yaxis.set_minor_formatter(ticker.NullFormatter())


def save(fig, path) -> None:
  fig.tight_layout()
  with workdir_lib.path(path).open("wb") as f:
    fig.savefig(f, format="png", dpi=100)
  plt.close(fig)


def plot_run(records: list[dict[str, Any]], path, title: str = "") -> None:
  """Training (and validation, where logged) perplexity against epoch from a run's epoch records."""
  epochs = [r for r in records if "epoch" in r and not r.get("final")]
  fig, axis = figure(6.4, 4.0)
  values = []
  for key, label, style in (("train_perplexity", "training", "-"), ("val_perplexity", "validation", "--")):
    points = [(r["epoch"], r[key]) for r in epochs if isinstance(r.get(key), (int, float))]
    if points:
      axis.plot(*zip(*points), style, marker="o" if len(points) < 30 else None, ms=3, label=label)
      values += [y for _, y in points]
  if spans_a_decade(values):
    plain_log_y(axis)
  axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # epochs are whole numbers
  axis.set_xlabel("epoch")
  axis.set_ylabel("perplexity")
  axis.set_title(title)
  axis.grid(True, which="both", alpha=0.3)
  if values:
    axis.legend()
  save(fig, path)
