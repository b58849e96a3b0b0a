"""A character model of tiny shakespeare (Karpathy's char-rnn corpus: 1,115,394 characters, 65 symbols; the last
10% held out), in two variants that differ only in regularization, sized to train on one core of a 2-core CPU in
about 70 minutes per run: one LSTM layer of 512 units over a 128-wide embedding, batch 32 x 50 steps of
consecutive text with the state carried (char-rnn's shape: many small updates), Adam lr 0.003 with a 50-step
warmup and a cosine decay to 0.0003, global-norm clipping at 5, 10 epochs, validation bits per character every epoch.

- ``variant=plain``: no regularization (one layer: no dropout between layers either).
- ``variant=regularized``: AWD-LSTM's dropouts at the recurrence's full speed: DropConnect on ``W_h``
  (``weight_drop`` 0.1) and locked dropout (0.2) on the embedded inputs and the outputs; no embedding dropout
  (AWD-LSTM's character models use none either).

Command:  python -m lstm_jax.main --config experiments/tinyshakespeare.py:variant=regularized --workdir runs/ts_reg
Measured: reports/tinyshakespeare/README.md (three seeds of each variant, the table and the validation curves).
"""

from lstm_jax import config as config_lib

REGULARIZED = {"weight_drop": 0.1, "locked_dropout": 0.2}
BATCH, STEPS = 32, 50
STEPS_PER_EPOCH = 627  # 1,003,854 training characters in 32 x 50 minibatches


def get_config(arg=None):
  variant = config_lib.parse_arg(arg, variant="plain", epochs="10")
  if variant.variant not in ("plain", "regularized"):
    raise ValueError(f"Unknown variant {variant.variant!r}; write variant=plain or variant=regularized.")
  config = config_lib.default_config()
  config.data.corpus = "tinyshakespeare"
  config.data.edition = "raw"
  config.data.tokens = "char"
  config.data.max_tokens = 0
  config.data.val_fraction = 0.1
  config.data.sampling = "sequential"
  config.data.batch_size = BATCH
  config.data.num_steps = STEPS
  config.model.cell = "lstm"
  config.model.hidden_size = 512
  config.model.num_layers = 1
  config.model.embed_dim = 128
  config.model.init_scheme = "pytorch"
  if variant.variant == "regularized":
    for name, value in REGULARIZED.items():
      config.model[name] = value
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 0.003
  config.optimizer.schedule = "warmup_cosine"
  config.optimizer.warmup_steps = 50
  config.optimizer.decay_steps = STEPS_PER_EPOCH * int(variant.epochs)
  config.optimizer.end_fraction = 0.1
  config.optimizer.clip_norm = 5.0
  config.train.num_epochs = int(variant.epochs)
  config.train.eval_every_epochs = 1
  config.train.generate_every_epochs = 3
  config.train.checkpoint_every_epochs = 1
  config.train.progress_every_sec = 60.0
  config.generate.prefixes = ("ROMEO:",)
  config.generate.num_tokens = 200
  config.generate.method = "sample"
  config.generate.top_k = 5
  return config


VARIANTS = ["variant=plain", "variant=regularized"]
