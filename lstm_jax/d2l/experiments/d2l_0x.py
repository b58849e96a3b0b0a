"""The Time Machine rows of d2l-en 0.7-0.17.x and d2l-zh 2.0, book_tables.md section 0.3 (500 epochs each).

Variants: ``experiments/d2l_0x.py:model=lstm,impl=scratch`` with ``model`` in lstm | gru | rnn | deep_lstm,
``impl`` in scratch | library (deep_lstm: library only), ``sampling`` sequential | random | random_iter (the rnn
scratch row ran sequential and random). The book's "random sampling" run is ``train_ch8(net, train_iter, ...,
use_random_iter=True)`` with the *sequential* ``train_iter`` of the first run: only the state changes (zero before
every minibatch), so ``sampling=random`` is sequential partitioning with ``data.carry_state=False``;
``sampling=random_iter`` is ``seq_data_iter_random`` (shuffled chunks), which the PyTorch and MXNet notebooks of
these editions do not use for this run. Shared: per line ``[^A-Za-z]+`` -> space, strip, lowercase, lines joined
without a separator, frequency vocab of 28, first 10,000 tokens; batch 32, 35 steps, SGD lr 1 (deep: 2),
global-norm clip 1, 500 epochs. Scratch: N(0, 0.01) weights, zero biases. Concise follows the PyTorch column:
PyTorch's default init, every cell weight and the output layer U(+-1/sqrt(H)) (PyTorch's two summed biases are one
bias here).

Command: python -m lstm_jax.main --config experiments/d2l_0x.py:model=gru,impl=scratch --workdir runs/d2l_0x_gru

Book (final training perplexity printed to one decimal, v0.17.5 PyTorch; section 6 min / median / max over builds):

| row | hidden | book | spread |
|---|---|---|---|
| rnn scratch, sequential | 512 | 1.0 | 1.0 / 1.0 / 1.2 |
| rnn scratch, random | 512 | 1.5 | 1.3 / 1.4 / 1.5 |
| rnn library | 256 | 1.3 | 1.3 / 1.3 / 1.4 |
| gru scratch | 256 | 1.1 | 1.0 / 1.1 / 1.3 |
| gru library | 256 | 1.0 | 1.0 / 1.0 / 1.1 |
| lstm scratch | 256 | 1.1 | 1.1 / 1.1 / 1.4 |
| lstm library | 256 | 1.0 | 1.0 / 1.0 / 1.3 |
| deep lstm library, 2 layers, lr 2 | 256 | 1.0 | 1.0 / 1.0 / 1.0 |

Expected wall time on a 2-core CPU (measured: one of two runs side by side, each on its own core, as
``lstm_jax.commands.report`` runs them): rnn library 27 s, rnn / gru / lstm scratch 63-72 s, gru library 75 s, lstm library
103 s, deep lstm 5.6 min a run; per row in reports/d2l/RESULTS.md.
The book's scratch GRU is the reset-before form (``gru``); PyTorch's nn.GRU is the reset-after form
(``gru_reset_after``, Flax's GRUCell).
"""

from lstm_jax import config as config_lib

ROWS = {  # (model, impl) -> hidden, layers, lr, cell
    ("rnn", "scratch"): (512, 1, 1.0, "rnn"),
    ("rnn", "library"): (256, 1, 1.0, "rnn"),
    ("gru", "scratch"): (256, 1, 1.0, "gru"),
    ("gru", "library"): (256, 1, 1.0, "gru_reset_after"),
    ("lstm", "scratch"): (256, 1, 1.0, "lstm"),
    ("lstm", "library"): (256, 1, 1.0, "lstm"),
    ("deep_lstm", "library"): (256, 2, 2.0, "lstm"),
}
SAMPLINGS = {  # variant -> data.sampling, data.carry_state
    "sequential": ("sequential", None),
    "random": ("sequential", False),
    "random_iter": ("random", None),
}


def get_config(arg=None):
  variant = config_lib.parse_arg(arg, model="lstm", impl="scratch", sampling="sequential")
  if (variant.model, variant.impl) not in ROWS:
    raise ValueError(f"No row {variant.model}/{variant.impl} in book_tables.md section 0.3; rows: {sorted(ROWS)}.")
  if variant.sampling not in SAMPLINGS:
    raise ValueError(f"Unknown sampling={variant.sampling}; choose one of {sorted(SAMPLINGS)}.")
  hidden, layers, lr, cell = ROWS[(variant.model, variant.impl)]
  config = config_lib.default_config()
  config.data.corpus, config.data.edition = "timemachine", "d2l_0x"
  config.data.sampling, config.data.carry_state = SAMPLINGS[variant.sampling]
  config.data.max_tokens, config.data.batch_size, config.data.num_steps = 10000, 32, 35
  config.model.implementation = "scratch" if variant.impl == "scratch" else "flax"
  config.model.init_scheme = "d2l" if variant.impl == "scratch" else "pytorch"
  config.model.cell, config.model.hidden_size, config.model.num_layers = cell, hidden, layers
  config.optimizer.learning_rate, config.optimizer.clip_norm = lr, 1.0
  config.train.num_epochs = 500
  config.train.log_every_epochs = 10
  config.train.generate_every_epochs = 100
  config.generate.prefixes = ("time traveller", "traveller")
  return config
