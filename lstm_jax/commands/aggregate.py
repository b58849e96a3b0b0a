"""A sweep's table and plot: ``python -m lstm_jax.commands.aggregate --sweep_dir runs/sweeps/hidden`` (writes
RESULTS.md, curves.png and, for one swept value, plot.png there; ``lstm_jax.sweeps.aggregate``)."""

import pathlib

from absl import app, flags

from lstm_jax.commands import common

_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Directory holding one workdir per run.", required=True)


def main(argv):
  del argv
  from lstm_jax.sweeps import aggregate  # noqa: PLC0415  after flag parsing: a bad flag is answered fast
  print(aggregate.aggregate(_SWEEP_DIR.value))
  directory = pathlib.Path(_SWEEP_DIR.value)
  written = [directory / name for name in ("RESULTS.md", "curves.png", "plot.png") if (directory / name).exists()]
  print("Wrote " + ", ".join(str(path) for path in written))


def run():
  app.run(main, flags_parser=common.parse_flags)


if __name__ == "__main__":
  run()
