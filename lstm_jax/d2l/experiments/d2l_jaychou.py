"""The Jay Chou lyrics rows of d2l-zh 1.x (MXNet), book_tables.md section 0.1.

Variants: ``experiments/d2l_jaychou.py:model=lstm,impl=scratch`` with ``model`` in lstm | gru | rnn, ``impl`` in
scratch | library, ``sampling`` random | sequential (the book's rnn scratch ran both; the others are sequential).
Shared: the zip's text, newlines to spaces, first 10,000 characters (vocab 1027), hidden 256, 35 steps, batch 32,
SGD lr 100, clip 0.01, N(0, 0.01) weights; prefixes 分开 and 不分开, 50 characters.

Command: python -m lstm_jax.main --config experiments/d2l_jaychou.py:model=lstm,impl=scratch --workdir runs/jay_lstm

| row | epochs | book perplexity |
|---|---|---|
| rnn scratch, random | 200 | @50 69.79, @100 9.77, @150 2.89, @200 1.60 |
| rnn scratch, sequential | 200 | @50 66.04, @100 7.32, @150 2.11, @200 1.31 |
| rnn library, sequential | 200 | @50 83.73, @100 14.29, @150 4.93, @200 2.65 |
| gru scratch | 160 | @40 150.02, @80 32.61, @120 4.86, @160 1.44 |
| gru library | 160 | @40 152.44, @80 30.98, @120 4.66, @160 1.44 |
| lstm scratch | 160 | @40 212.42, @80 69.84, @120 15.23, @160 4.07 |
| lstm library | 160 | @40 220.63, @80 65.49, @120 14.64, @160 3.85 |

The library GRU is Gluon's (cuDNN's) reset-after GRU (``gru_reset_after``, Flax's GRUCell); the library RNN is
Gluon's ``rnn.RNN`` with its default ReLU activation (``rnn_relu``); the scratch cells are the book's (``gru``
reset-before, ``rnn`` tanh).

Expected wall time on a 2-core CPU (measured, machine shared with a second run): rnn scratch 35-38 s (each run on
its own core), rnn library about 2 min, gru scratch about 2 min, gru library about 3 min, lstm scratch about 80 s,
lstm library about 4 min (the library cells project the 1027-wide one-hot input inside every step). Details: reports/d2l/RESULTS.md.
"""

from lstm_jax import config as config_lib

EPOCHS = {"rnn": 200, "gru": 160, "lstm": 160}
CELLS = {("rnn", "scratch"): "rnn", ("rnn", "library"): "rnn_relu", ("gru", "scratch"): "gru",
         ("gru", "library"): "gru_reset_after", ("lstm", "scratch"): "lstm", ("lstm", "library"): "lstm"}


def get_config(arg=None):
  variant = config_lib.parse_arg(arg, model="lstm", impl="scratch", sampling="sequential")
  if (variant.model, variant.impl) not in CELLS:
    raise ValueError(f"No row {variant.model}/{variant.impl} in book_tables.md section 0.1; rows: {sorted(CELLS)}.")
  config = config_lib.default_config()
  config.data.corpus, config.data.edition, config.data.sampling = "jaychou", "d2l_zh1", variant.sampling
  config.model.implementation = "scratch" if variant.impl == "scratch" else "flax"
  config.model.cell, config.model.hidden_size = CELLS[(variant.model, variant.impl)], 256
  config.optimizer.learning_rate, config.optimizer.clip_norm = 100.0, 0.01
  config.train.num_epochs = EPOCHS[variant.model]
  config.train.log_every_epochs = config.train.generate_every_epochs = 50 if variant.model == "rnn" else 40
  config.generate.prefixes = ("分开", "不分开")
  return config
