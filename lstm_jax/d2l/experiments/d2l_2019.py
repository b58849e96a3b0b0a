"""The Time Machine rows of early-2019 d2l-en (MXNet), book_tables.md section 0.2 (the main job is the LSTM scratch row).

Variants: ``experiments/d2l_2019.py:model=lstm,impl=scratch`` with ``model`` in lstm | gru | rnn | deep_lstm and
``impl`` in scratch | library (deep_lstm: library only), ``sampling`` random | sequential (rnn scratch ran both).
Shared: lowercased, newlines to spaces, first 10,000 characters (vocab 43), batch 32, SGD lr 100, clip 0.01,
N(0, 0.01) weights (Gluon's library models were re-initialised with the same law).

Command: python -m lstm_jax.main --config experiments/d2l_2019.py:model=gru,impl=scratch --workdir runs/d2l_2019_gru

| row | hidden | steps | epochs | book perplexity |
|---|---|---|---|---|
| rnn scratch, random | 512 | 64 | 500 | @50 8.95, @250 2.43, @500 1.35 |
| rnn scratch, sequential | 512 | 64 | 500 | @50 8.77, @250 1.59, @500 1.17 |
| rnn library | 256 | 35 | 200 | @50 4.20, @100 2.00, @150 1.51, @200 1.30 |
| gru scratch | 256 | 35 | 160 | @40 7.74, @80 3.35, @120 1.35, @160 1.15 |
| gru library | 256 | 35 | 160 | @40 7.78, @80 3.57, @120 1.42, @160 1.12 |
| lstm scratch | 256 | 35 | 160 | @40 7.95, @80 3.83, @120 1.92, @160 1.32 (ours, 3 seeds: 1.31, 24 s) |
| lstm library | 256 | 35 | 160 | @40 8.29, @80 4.63, @120 2.38, @160 1.48 |
| deep lstm library, 2 layers | 256 | 35 | 3000 | @500 10.94 ... @3000 1.29 (a second run: 1.02) |

Expected wall time on a 2-core CPU (measured: one of two runs side by side, each on its own core, as
``lstm_jax.commands.report`` runs them): rnn scratch 59 s, rnn library 11 s, gru 26-28 s, lstm scratch 24 s, lstm library
37 s; deep_lstm (3000 epochs) 54-66 min a run (three seeds, each sharing the cores with other work and resumed
after a SIGTERM).
Per-row times and perplexities: reports/d2l/RESULTS.md.
The book's GRU is the reset-before form (``gru``); its library Gluon GRU is cuDNN's reset-after form, which Flax's
GRUCell also uses. Gluon's ``rnn.RNN(num_hiddens)`` defaults to ``activation='relu'``, so the library RNN row is a
ReLU Elman RNN (``rnn_relu``); the scratch RNN is tanh.
"""

from lstm_jax import config as config_lib

ROWS = {  # (model, impl) -> hidden, steps, epochs, layers, cell
    ("rnn", "scratch"): (512, 64, 500, 1, "rnn"),
    ("rnn", "library"): (256, 35, 200, 1, "rnn_relu"),  # Gluon rnn.RNN: ReLU by default
    ("gru", "scratch"): (256, 35, 160, 1, "gru"),
    ("gru", "library"): (256, 35, 160, 1, "gru_reset_after"),
    ("lstm", "scratch"): (256, 35, 160, 1, "lstm"),
    ("lstm", "library"): (256, 35, 160, 1, "lstm"),
    ("deep_lstm", "library"): (256, 35, 3000, 2, "lstm"),
}


def get_config(arg=None):
  variant = config_lib.parse_arg(arg, model="lstm", impl="scratch", sampling="sequential")
  if (variant.model, variant.impl) not in ROWS:
    raise ValueError(f"No row {variant.model}/{variant.impl} in book_tables.md section 0.2; rows: {sorted(ROWS)}.")
  hidden, steps, epochs, layers, cell = ROWS[(variant.model, variant.impl)]
  config = config_lib.default_config()
  config.data.corpus, config.data.edition = "timemachine", "d2l_2019"
  config.data.sampling = variant.sampling
  config.data.num_steps = steps
  config.model.implementation = "scratch" if variant.impl == "scratch" else "flax"
  config.model.cell, config.model.hidden_size, config.model.num_layers = cell, hidden, layers
  config.optimizer.learning_rate, config.optimizer.clip_norm = 100.0, 0.01
  config.train.num_epochs = epochs
  period = {160: 40, 200: 50, 500: 50, 3000: 500}[epochs]
  config.train.log_every_epochs = config.train.generate_every_epochs = period
  config.generate.prefixes = ("traveller", "time traveller")
  return config

