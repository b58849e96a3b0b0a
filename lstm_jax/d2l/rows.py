"""The book's published rows (``book_tables.md`` section 0, shipped beside this file): for each, the experiment
config that reproduces it, the perplexities the book printed and the run-to-run spread (section 6) it is judged
against. The configs are the package's ``lstm_jax/d2l/experiments/*.py`` (``experiments/d2l_*.py`` re-export them),
so an installed wheel runs the report.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import pathlib

from lstm_jax import config as config_lib

EXPERIMENTS = pathlib.Path(__file__).resolve().parent / "experiments"
TABLES = {"jaychou": "0.1 Jay Chou lyrics, d2l-zh 1.x (MXNet)",
          "tm2019": "0.2 The Time Machine, early-2019 d2l-en (MXNet)",
          "tm0x": "0.3 The Time Machine, d2l-en 0.17.x (PyTorch column)",
          "tm1x": "0.4 The Time Machine, d2l-en 1.0.x (JAX/Flax column; train / val)"}


@dataclasses.dataclass(frozen=True)
class Row:
  """One published row: where its config lives and what the book printed."""
  name: str                          # "tm2019_lstm_scratch"; the table is the part before the first "_"
  experiment: str                    # "FILE.py:variant" under experiments/
  book: dict[int, float]             # epoch -> printed training perplexity
  spread: tuple[float, float] | None = None      # book_tables.md section 6: (min, max) of the final training perplexity
  book_val: float | None = None                  # final validation perplexity (d2l 1.x)
  spread_val: tuple[float, float] | None = None  # book_tables.md section 6: (min, max) of the final validation perplexity
  decimals: int | None = None        # the book printed this many decimals (0.x: 1); ours is rounded alike to judge
  batch_means: bool = False          # the book's numbers are means of per-batch perplexities (d2l 1.x's board)
  slow: bool = False                 # left out of table names and "all" (run it by its name)

  @property
  def table(self) -> str:
    return self.name.split("_")[0]


def _rows() -> dict[str, Row]:
  j, t = "d2l_jaychou.py:", "d2l_2019.py:"
  rows = [
      Row("jaychou_rnn_scratch_random", j + "model=rnn,impl=scratch,sampling=random",
          {50: 69.786917, 100: 9.770921, 150: 2.889215, 200: 1.598483}),
      Row("jaychou_rnn_scratch_sequential", j + "model=rnn,impl=scratch",
          {50: 66.044946, 100: 7.323639, 150: 2.106254, 200: 1.312788}),
      Row("jaychou_rnn_library", j + "model=rnn,impl=library",
          {50: 83.729646, 100: 14.292668, 150: 4.934802, 200: 2.647248}),
      Row("jaychou_gru_scratch", j + "model=gru,impl=scratch",
          {40: 150.018977, 80: 32.612882, 120: 4.862518, 160: 1.442602}),
      Row("jaychou_gru_library", j + "model=gru,impl=library",
          {40: 152.437282, 80: 30.982365, 120: 4.660838, 160: 1.437830}),
      Row("jaychou_lstm_scratch", j + "model=lstm,impl=scratch",
          {40: 212.420988, 80: 69.836913, 120: 15.233232, 160: 4.065357}),
      Row("jaychou_lstm_library", j + "model=lstm,impl=library",
          {40: 220.632873, 80: 65.488771, 120: 14.643636, 160: 3.850567}),
      Row("tm2019_rnn_scratch_random", t + "model=rnn,impl=scratch,sampling=random",
          {50: 8.954775, 250: 2.434598, 500: 1.347638}),
      Row("tm2019_rnn_scratch_sequential", t + "model=rnn,impl=scratch",
          {50: 8.766011, 250: 1.589984, 500: 1.166729}),
      Row("tm2019_rnn_library", t + "model=rnn,impl=library",
          {50: 4.198955, 100: 2.001583, 150: 1.509388, 200: 1.299645}),
      Row("tm2019_gru_scratch", t + "model=gru,impl=scratch",
          {40: 7.740170, 80: 3.347345, 120: 1.350327, 160: 1.147413}),
      Row("tm2019_gru_library", t + "model=gru,impl=library",
          {40: 7.779318, 80: 3.565889, 120: 1.423461, 160: 1.118035}),
      Row("tm2019_lstm_scratch", t + "model=lstm,impl=scratch",
          {40: 7.948798, 80: 3.831706, 120: 1.922319, 160: 1.322308}),
      Row("tm2019_lstm_library", t + "model=lstm,impl=library",
          {40: 8.291799, 80: 4.629873, 120: 2.379147, 160: 1.475115}),
      Row("tm2019_deep_lstm_library", t + "model=deep_lstm,impl=library",
          {500: 10.935834, 1000: 2.045100, 1500: 1.154009, 2000: 1.104603, 2500: 1.082747, 3000: 1.292862},
          slow=True),
  ]
  for model, impl, sampling, book, spread in [
      ("rnn", "scratch", "sequential", 1.0, (1.0, 1.2)), ("rnn", "scratch", "random", 1.5, (1.3, 1.5)),
      ("rnn", "library", "", 1.3, (1.3, 1.4)), ("gru", "scratch", "", 1.1, (1.0, 1.3)),
      ("gru", "library", "", 1.0, (1.0, 1.1)), ("lstm", "scratch", "", 1.1, (1.1, 1.4)),
      ("lstm", "library", "", 1.0, (1.0, 1.3)), ("deep_lstm", "library", "", 1.0, (1.0, 1.0))]:
    name = "_".join(filter(None, ["tm0x", model, impl, sampling]))
    arg = f"model={model},impl={impl}" + (f",sampling={sampling}" if sampling else "")
    rows.append(Row(name, "d2l_0x.py:" + arg, {500: book}, spread, decimals=1))
  for model, impl, epochs, train, val, spread, spread_val in [
      ("rnn", "scratch", 100, 6.18, 7.31, (6.11, 6.34), (7.18, 7.37)),
      ("rnn", "library", 100, 5.87, 7.19, (5.86, 6.10), (7.10, 7.42)),
      ("gru", "scratch", 50, 5.68, 6.68, (5.65, 5.77), (6.68, 6.85)),
      ("gru", "library", 50, 5.66, 7.27, (4.71, 9.25), (6.74, 9.13)),
      ("lstm", "scratch", 50, 6.90, 7.51, (6.65, 6.90), (7.31, 7.51)),
      ("lstm", "library", 50, 5.47, 6.85, (5.27, 5.52), (6.84, 6.87)),
      ("deep_rnn", "scratch", 100, 5.47, 6.80, (5.14, 5.47), (6.80, 7.26)),
      ("deep_gru", "library", 100, 3.61, 6.61, (3.49, 3.61), (6.61, 7.01))]:
    rows.append(Row(f"tm1x_{model}_{impl}", f"d2l_1x.py:model={model},impl={impl}", {epochs: train}, spread,
                    val, spread_val, batch_means=True))
  return {row.name: row for row in rows}


ROWS = _rows()


def select_rows(spec: str) -> list[Row]:
  """``"tm2019,jaychou_lstm_*"`` -> rows, in table order. Unknown names are an error listing the valid ones."""
  chosen: list[str] = []
  for item in filter(None, (s.strip() for s in spec.split(","))):
    if item == "all" or item in TABLES:
      names = [r.name for r in ROWS.values() if not r.slow and item in ("all", r.table)]
    else:
      names = fnmatch.filter(ROWS, item)
    if not names:
      raise ValueError(f"No row matches {item!r}; use a table ({', '.join(TABLES)}, all), a row name or a pattern. "
                       f"Rows: {', '.join(ROWS)}.")
    chosen += [n for n in names if n not in chosen]
  return [ROWS[n] for n in chosen]


def load_config(experiment: str):
  """``"FILE.py:variant"`` (a file of ``lstm_jax/d2l/experiments/``) -> that experiment's ``get_config(variant)``."""
  return config_lib.experiment_config(EXPERIMENTS / experiment)
