"""The PyTorch cross-check of a scratch row: ``python -m lstm_jax.commands.crosscheck
--experiment=d2l_jaychou.py:model=gru,impl=scratch --num_seeds=3 [--init=ours] [--out=FILE.md]``."""

import pathlib

from absl import app, flags

from lstm_jax.commands import common

_EXPERIMENT = flags.DEFINE_string("experiment", None, "Row config, FILE.py:variant under lstm_jax/d2l/experiments/.", required=True)
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 3, "Seeds 0 .. N-1 (config.seed: data order; torch.manual_seed: "
                                  "weights).")
_OUT = flags.DEFINE_string("out", None, "Also write the Markdown table to this file.")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 1, "torch.set_num_threads.")
_INIT = flags.DEFINE_enum("init", "torch", ["torch", "ours"], "Initial weights: torch (the book's law drawn by "
                          "torch) or ours (the very weights our JAX run of the seed starts from).")
_EPOCHS = flags.DEFINE_list("epochs", [], "Epochs to tabulate (default: the book's printed epochs).")



def main(argv):
  del argv
  from lstm_jax.d2l import torch_crosscheck  # noqa: PLC0415  after flag parsing: a bad flag is answered fast
  text = torch_crosscheck.crosscheck(_EXPERIMENT.value, _NUM_SEEDS.value, _INIT.value,
                                     [int(e) for e in _EPOCHS.value], _TORCH_THREADS.value)
  print(text)
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(text)


def run():
  app.run(main, flags_parser=common.parse_flags)


if __name__ == "__main__":
  run()
