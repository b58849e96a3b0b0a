"""Reproduce the book's tables: ``python -m lstm_jax.commands.report --rows=tm2019 --seeds=3 --out_dir=reports/d2l``.

Trains every missing ``runs_dir/ROW/seedK`` (``--jobs`` at a time), reads the finished ones and writes RESULTS.md,
summary.json and one PNG per table (``lstm_jax.d2l.report``). ``--rows`` takes row names, table names (jaychou,
tm2019, tm0x, tm1x, all) or shell patterns, comma separated; ``--notrain`` only reports.
"""

import pathlib

from absl import app, flags, logging

from lstm_jax.commands import common

_ROWS_FLAG = flags.DEFINE_string("rows", "tm2019", "Rows: names, tables (jaychou, tm2019, tm0x, tm1x, all) or "
                                 "patterns, comma separated.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per row (0 .. N-1).")
_RUNS_DIR = flags.DEFINE_string("runs_dir", "runs/d2l", "Where the runs live: RUNS_DIR/ROW/seedK.")
_OUT_DIR = flags.DEFINE_string("out_dir", "reports/d2l", "Where RESULTS.md and the plots go.")
_JOBS = flags.DEFINE_integer("jobs", 2, "Runs trained at once, each in its own process (1: one after another).")
_TRAIN = flags.DEFINE_bool("train", True, "Train missing runs; --notrain reports only the finished ones.")
_PIN_CORES = flags.DEFINE_bool("pin_cores", True, "Bind each of the --jobs worker processes to its own CPU core "
                                "(when there are that many cores).")
_LIBRARY_STEPS = flags.DEFINE_integer("library_steps", 40, "Steps of the scratch-vs-library comparison (0: skip).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from lstm_jax.d2l.library_check import LIBRARY_PAIRS, scratch_vs_library  # noqa: PLC0415  after flag parsing
  from lstm_jax.d2l.report import write_report  # noqa: PLC0415
  from lstm_jax.d2l.rows import ROWS, select_rows  # noqa: PLC0415
  from lstm_jax.d2l.runs import check_runs_match, collect_runs, train_missing  # noqa: PLC0415
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)  # orbax warns about every read-only restore of a sample
  rows = select_rows(_ROWS_FLAG.value)
  runs_dir = pathlib.Path(_RUNS_DIR.value)
  check_runs_match(rows, _SEEDS.value, runs_dir)
  if _TRAIN.value:
    train_missing(rows, _SEEDS.value, runs_dir, _JOBS.value, _PIN_CORES.value)
  runs, samples = collect_runs(rows, _SEEDS.value, runs_dir)
  library = [scratch_vs_library(cell, impl, _LIBRARY_STEPS.value) for cell, impl in LIBRARY_PAIRS] \
      if _LIBRARY_STEPS.value > 0 else None
  command = (f"python -m lstm_jax.commands.report --rows={_ROWS_FLAG.value} --seeds={_SEEDS.value} "
             f"--runs_dir={_RUNS_DIR.value} --out_dir={_OUT_DIR.value}")
  summaries = write_report(rows, runs, pathlib.Path(_OUT_DIR.value), samples, library, command)
  for name, s in summaries.items():
    final = s["at_epochs"][max(ROWS[name].book)]
    print(f"{name:34s} {final[0]:8.3f} ± {final[1]:.3f}  ({s['seeds']} seeds)  {s['verdict']}")
  print(f"Wrote {pathlib.Path(_OUT_DIR.value) / 'RESULTS.md'}")


def run():
  app.run(main, flags_parser=common.parse_flags)


if __name__ == "__main__":
  run()
