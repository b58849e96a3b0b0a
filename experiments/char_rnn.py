"""A character model of your own text, set up like the well-known PyTorch char-RNN tutorial (Udacity's "Character-
Level LSTM in PyTorch", trained on Anna Karenina): 2 LSTM layers x 512 units, dropout 0.5 between them, one-hot
inputs, batch 128 x 100 steps of consecutive text with the state carried across batches, Adam lr 0.001,
global-norm clipping at 5, the last 10% of the text held out for validation, 20 epochs; training and validation
loss and perplexity are printed side by side each epoch, and samples are drawn from the 5 most likely characters.

Variants: ``experiments/char_rnn.py:corpus=PATH`` (a UTF-8 text file or a directory of them; default: The Time
Machine's raw text), ``tokens=word`` for whitespace-separated words, ``epochs=N``.

Command:  python -m lstm_jax.main --config experiments/char_rnn.py:corpus=my_text.txt --workdir runs/char_rnn
Measured: on The Time Machine's raw text (about 178k characters, 160k for training; 12 steps an epoch), validation
perplexity 10.27 (training 10.47) after 20 epochs, still falling about 4% an epoch; 1047 s on the 2-core CPU while
it shared the machine with two other training runs (about 3,100 tokens/s).

Differences from the tutorial: its dropout also acts on the top layer's output before the linear layer (here only
between layers), and its batches start at offset 0 every epoch (here at the book's random offset).
"""

from lstm_jax import config as config_lib


def get_config(arg=None):
  variant = config_lib.parse_arg(arg, corpus="timemachine", tokens="char", epochs="20")
  config = config_lib.default_config()
  config.data.corpus = variant.corpus
  config.data.edition = "raw"
  config.data.tokens = variant.tokens
  config.data.max_tokens = 0
  config.data.val_fraction = 0.1
  config.data.sampling = "sequential"
  config.data.batch_size = 128
  config.data.num_steps = 100
  config.model.cell = "lstm"
  config.model.hidden_size = 512
  config.model.num_layers = 2
  config.model.dropout = 0.5
  config.model.init_scheme = "pytorch"
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 0.001
  config.optimizer.clip_norm = 5.0
  config.train.num_epochs = int(variant.epochs)
  config.train.eval_every_epochs = 1
  config.train.generate_every_epochs = 5
  config.train.checkpoint_every_epochs = 1
  config.generate.prefixes = ("The ",) if variant.tokens == "char" else ("The",)
  config.generate.num_tokens = 200 if variant.tokens == "char" else 40
  config.generate.method = "sample"
  config.generate.top_k = 5
  return config


VARIANTS = ["tokens=char", "tokens=word,epochs=5"]
