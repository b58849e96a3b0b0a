"""The Time Machine rows of d2l-en 1.0.x, book_tables.md section 0.4 (its JAX/Flax tab is the closest JAX reference).

Variants: ``experiments/d2l_1x.py:model=lstm,impl=scratch`` with ``model`` in lstm | gru | rnn | deep_rnn |
deep_gru and ``impl`` in scratch | library (deep_rnn: scratch only; deep_gru: library only).
Shared: whole text ``[^A-Za-z]+`` -> space, lowercase, sorted vocab of 28; windows of 32 steps, stride 1; train on
the windows starting at 0..9999 (shuffled, batch 1024, state zero every batch), validate on 10000..14999.
Scratch: N(0, 0.01) weights, zero biases; library: Flax's cells (lstm: OptimizedLSTMCell) and a Flax Dense head
with Flax's default initialisers (RNN library, from the PyTorch tab: PyTorch's U(+-1/sqrt(H)) init).

Clipping: d2l 1.x's JAX trainer never clips (book_tables.md section 3.3), so the rows with a JAX number run
**unclipped** (``clip_norm = 0``). RNN library has no JAX training in the book: it follows the PyTorch tab, clip 1.

Command: python -m lstm_jax.main --config experiments/d2l_1x.py:model=lstm,impl=scratch --workdir runs/d2l_1x_lstm

| row | hp | book train / val (JAX; RNN library: PyTorch) | section 6 spread (train; val) |
|---|---|---|---|
| rnn scratch | h32, lr 1, 100 ep | 6.18 / 7.31 | 6.11-6.34; 7.18-7.37 |
| rnn library | h32, lr 1, clip 1, 100 ep | 5.87 / 7.19 | 5.86-6.10; 7.10-7.42 |
| gru scratch | h32, lr 4, 50 ep | 5.68 / 6.68 | 5.65-5.77; 6.68-6.85 |
| gru library | h32, lr 4, 50 ep | 5.66 / 7.27 | 4.71-9.25; 6.74-9.13 |
| lstm scratch | h32, lr 4, 50 ep | 6.90 / 7.51 | 6.65-6.90; 7.31-7.51 |
| lstm library | h32, lr 4, 50 ep | 5.47 / 6.85 | 5.27-5.52; 6.84-6.87 |
| deep rnn scratch | 2x32, lr 2, 100 ep | 5.47 / 6.80 | 5.14-5.47; 6.80-7.26 |
| deep gru library | 2x32, lr 2, 100 ep | 3.61 / 6.61 | 3.49-3.61; 6.61-7.01 |

The book's train value is the mean of per-batch perplexities over the last half epoch and its val value a mean
of per-batch perplexities. The runs log both measures: ``train_perplexity`` / ``val_perplexity`` (exp of the
token-mean NLL over the whole epoch / the val windows) and the book's ``train_batch_perplexity_last_half`` /
``val_batch_perplexity_mean`` (``train.log_batch_perplexity``); the report judges on the book's.

Expected wall time on a 2-core CPU (measured: one of two runs side by side, each on its own core, as
``lstm_jax.commands.report`` runs them): 18-40 s a run, deep_gru library about 2 min; per row in reports/d2l/RESULTS.md.
"""

from lstm_jax import config as config_lib

ROWS = {  # (model, impl) -> layers, lr, epochs, clip, cell, implementation, init
    ("rnn", "scratch"): (1, 1.0, 100, 0.0, "rnn", "scratch", "d2l"),
    ("rnn", "library"): (1, 1.0, 100, 1.0, "rnn", "flax", "pytorch"),  # the PyTorch tab: nn.RNN, clip 1
    ("gru", "scratch"): (1, 4.0, 50, 0.0, "gru", "scratch", "d2l"),
    ("gru", "library"): (1, 4.0, 50, 0.0, "gru_reset_after", "flax", "flax"),
    ("lstm", "scratch"): (1, 4.0, 50, 0.0, "lstm", "scratch", "d2l"),
    ("lstm", "library"): (1, 4.0, 50, 0.0, "lstm", "flax_optimized", "flax"),
    ("deep_rnn", "scratch"): (2, 2.0, 100, 0.0, "rnn", "scratch", "d2l"),
    ("deep_gru", "library"): (2, 2.0, 100, 0.0, "gru_reset_after", "flax", "flax"),
}


def get_config(arg=None):
  variant = config_lib.parse_arg(arg, model="lstm", impl="scratch")
  if (variant.model, variant.impl) not in ROWS:
    raise ValueError(f"No row {variant.model}/{variant.impl} in book_tables.md section 0.4; rows: {sorted(ROWS)}.")
  layers, lr, epochs, clip, cell, implementation, init = ROWS[(variant.model, variant.impl)]
  config = config_lib.default_config()
  config.data.corpus, config.data.edition, config.data.sampling = "timemachine", "d2l_1x", "windows"
  config.data.max_tokens, config.data.batch_size, config.data.num_steps = 0, 1024, 32
  config.data.num_train_windows, config.data.num_val_windows = 10000, 5000
  config.model.implementation = implementation
  config.model.init_scheme = init
  config.model.cell, config.model.hidden_size, config.model.num_layers = cell, 32, layers
  config.optimizer.learning_rate, config.optimizer.clip_norm = lr, clip
  config.train.num_epochs = epochs
  config.train.log_every_epochs = config.train.eval_every_epochs = 5
  config.train.generate_every_epochs = 0
  config.train.log_batch_perplexity = True
  config.generate.prefixes = ("it has",)
  config.generate.num_tokens = 20
  return config
