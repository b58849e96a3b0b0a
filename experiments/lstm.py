"""A character LSTM (or another cell) on either corpus, with named variants and sweeps.

Variants (big_vision style): ``experiments/lstm.py:corpus=jaychou,cell=gru,impl=scratch`` with
``corpus`` timemachine | jaychou, ``cell`` lstm | gru | rnn, ``impl`` scratch | flax. The base is the book's
setting for the corpus (2019 d2l-en for the Time Machine, d2l-zh 1.x for the lyrics): hidden 256, 35 steps,
batch 32, sequential sampling, SGD lr 100, clip 0.01, 160 epochs.

Sweeps (``sweep(add, name)``), launched with ``python -m lstm_jax.commands.sweep --config experiments/lstm.py:corpus=...
--sweep NAME --root runs/sweeps [--dry_run | --mode local|gpus|slurm|tpu|population]``:
  hidden, num_steps, learning_rate, clip: the swept value crossed with the cell types lstm, gru, rnn;
  cell: cell type x implementation (scratch, flax); lr_clip: a 4 x 4 learning-rate x clipping grid for the
  variant's cell, which trains as one population (``--mode population``).

Command:  python -m lstm_jax.main --config experiments/lstm.py:corpus=jaychou --workdir runs/jay_lstm
Expected: Time Machine LSTM scratch, 160 epochs: perplexity about 1.3 in about 30 s (2-core CPU, measured).
"""

from lstm_jax import config as config_lib


def get_config(arg=None):
  variant = config_lib.parse_arg(arg, corpus="timemachine", cell="lstm", impl="scratch")
  config = config_lib.default_config()
  config.data.corpus = variant.corpus
  config.data.edition = {"timemachine": "d2l_2019", "jaychou": "d2l_zh1"}.get(variant.corpus, "raw")
  config.model.cell = variant.cell
  config.model.implementation = variant.impl
  config.train.num_epochs = 160
  config.train.log_every_epochs = 10
  config.generate.prefixes = ("分开", "不分开") if variant.corpus == "jaychou" else ("traveller", "time traveller")
  return config


CORPORA = ("timemachine", "jaychou")
CELL_TYPES = ("lstm", "gru", "rnn")
IMPLEMENTATIONS = ("scratch", "flax")
VARIANTS = [f"corpus={corpus},cell={cell},impl={impl}"
            for corpus in CORPORA for cell in CELL_TYPES for impl in IMPLEMENTATIONS]

_SWEPT = {  # sweep name -> (config path, values); each value is crossed with every cell type
    "hidden": ("model.hidden_size", (64, 128, 256, 512)),
    "num_steps": ("data.num_steps", (16, 35, 64, 100)),
    "learning_rate": ("optimizer.learning_rate", (10.0, 30.0, 100.0, 300.0)),
    "clip": ("optimizer.clip_norm", (0.001, 0.01, 0.1, 1.0)),
}
SWEEPS = {name: [{key: value, "model.cell": cell} for cell in CELL_TYPES for value in values]
          for name, (key, values) in _SWEPT.items()}
SWEEPS["cell"] = [{"model.cell": cell, "model.implementation": impl} for cell in CELL_TYPES for impl in IMPLEMENTATIONS]
# One cell, only learning rate and clipping vary: every point has the same shapes, so the whole grid can train as
# one population (python -m lstm_jax.commands.sweep ... --sweep lr_clip --mode population).
SWEEPS["lr_clip"] = [{"optimizer.learning_rate": lr, "optimizer.clip_norm": clip}
                     for lr in (10.0, 30.0, 100.0, 300.0) for clip in (0.001, 0.01, 0.1, 1.0)]


def sweep(add, name="learning_rate"):
  """Calls ``add(**overrides)`` once per point of the named sweep (keys are config paths)."""
  if name not in SWEEPS:
    raise ValueError(f"Unknown sweep {name!r}; choose one of {sorted(SWEEPS)}.")
  for point in SWEEPS[name]:
    add(**point)
