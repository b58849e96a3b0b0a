"""The default configuration: every field with a one-line comment. Experiment files under ``experiments/``
start from ``default_config()`` and change what their row of the book changes.

The config is locked: an override or an assignment to a key that does not exist is an error.
"""

from __future__ import annotations

import difflib
import importlib.util
import pathlib
from typing import Sequence

import ml_collections


# Config sections that fix a run's recipe (shapes, data order, updates): a checkpoint or finished run made with other
# values is another experiment. The rest (epochs, logging, saving) may change between a run and its resumption.
RECIPE_SECTIONS = ("seed", "data", "model", "optimizer")


def default_config() -> ml_collections.ConfigDict:
  """Every field with its one-line comment (one long function on purpose: the config reads as one table)."""
  c = ml_collections.ConfigDict()
  c.seed = 0                           # seeds init, data order (offsets, shuffles), dropout and sampling

  c.data = ml_collections.ConfigDict()
  c.data.corpus = "timemachine"        # "timemachine", "jaychou", "tinyshakespeare", or a path to a UTF-8 text file/dir
  c.data.edition = "d2l_2019"          # preprocessing + batching rules: d2l_zh1 | d2l_2019 | d2l_0x | d2l_1x | raw
  c.data.tokens = "char"               # raw edition: char | word (whitespace-separated words)
  c.data.data_dir = ""                 # directory holding the corpus files (else $LSTM_JAX_DATA_DIR, cache, download)
  c.data.max_tokens = 10000            # keep the first N tokens for training (<= 0: all)
  c.data.num_val_tokens = 0            # the next N tokens form a validation stream (0: none; d2l_1x: see windows)
  c.data.val_fraction = 0.0            # raw edition: hold out this last fraction of the text (overrides the two above)
  c.data.sampling = "sequential"       # random | sequential (state carried across minibatches) | windows (d2l 1.x)
  c.data.carry_state = ml_collections.config_dict.placeholder(bool)  # None: carried iff sequential; False: zero
                                       # state every minibatch (d2l 0.x's "random" RNN run reused the sequential data)
  c.data.batch_size = 32               # sequences per minibatch
  c.data.num_steps = 35                # time steps per sequence (truncated BPTT length)
  c.data.num_train_windows = 10000     # windows sampling: training windows start at 0 .. N-1
  c.data.num_val_windows = 5000        # windows sampling: validation windows start at N_train .. N_train+N_val-1

  c.model = ml_collections.ConfigDict()
  c.model.implementation = "scratch"   # scratch (lstm_jax.cells) | flax | flax_optimized (Flax's cells: the library
                                       # model) | nnx (the scratch cells as flax.nnx modules) | cudnn
                                       # (jax.experimental.rnn's cuDNN LSTM; CUDA GPUs only)
  c.model.cell = "lstm"                # a family in lstm_jax.cells.REGISTRY: lstm | gru | gru_reset_after | rnn | ...
  c.model.hidden_size = 256            # units per layer (H)
  c.model.num_layers = 1               # stacked layers
  c.model.embed_dim = ml_collections.config_dict.placeholder(int)  # None: one-hot inputs (the book); int: embedding
  c.model.init_scheme = "d2l"          # d2l: N(0, 0.01) / zeros | pytorch: U(+-1/sqrt(H)) | flax: lecun/orthogonal
  c.model.forget_bias = 0.0            # added to the forget-gate bias at init (LSTM)
  c.model.dropout = 0.0                # dropout between stacked layers, training only
  # Regularizers (AWD-LSTM's; lstm_jax/models/regularizers.py), all off by default, training only; scratch model:
  c.model.weight_drop = 0.0            # DropConnect on each layer's W_h, one mask per minibatch (every recurrence)
  c.model.locked_dropout = 0.0         # one mask per sequence on each layer's inputs (embedded) and the top outputs
  c.model.embedding_dropout = 0.0      # whole rows of the embedding dropped per minibatch (needs embed_dim)
  c.model.recurrent_dropout = 0.0      # a mask per sequence on h inside the step (scan, fused_vjp; lstm, rnn cells)
  c.model.tie_weights = False          # output layer = embedding transposed (needs embed_dim; projects H -> E first)
  c.model.ar = 0.0                     # loss + ar * mean(top outputs after dropout ^ 2) (activation regularization)
  c.model.tar = 0.0                    # loss + tar * mean((h_t - h_{t-1}) ^ 2), top outputs before dropout (temporal)
  c.model.unroll = 1                   # lax.scan unroll factor
  c.model.recurrence = "auto"          # auto: on a GPU/TPU the lowest estimate (lstm_jax.estimates), else fused_vjp
                                       # (lstm, rnn), else scan |
                                       # scan (autodiff) | fused_vjp (hand-written backward) | pallas (kernels)
  c.model.matmul_dtype = "float32"     # float32 (the book) | bfloat16 operands, float32 accumulation and state

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"             # sgd | momentum | adam | adamw | rmsprop | adagrad
  c.optimizer.learning_rate = 100.0    # the book's lr for clip 0.01 (update norm <= lr * clip = 1)
  c.optimizer.clip_norm = 0.01         # global-norm clipping threshold (<= 0: no clipping)
  c.optimizer.weight_decay = 0.0       # adamw only
  c.optimizer.schedule = "constant"    # constant (the book) | warmup_cosine | warmup_linear | warmup_exponential
  c.optimizer.warmup_steps = 0         # schedules: linear ramp from 0 over N steps
  c.optimizer.decay_steps = 1000       # schedules: decay length (exponential: steps per decay_rate factor)
  c.optimizer.end_fraction = 0.0       # schedules: final rate as a fraction of learning_rate
  c.optimizer.decay_rate = 0.5         # warmup_exponential: factor per decay_steps
  c.optimizer.averaging = "none"       # none | nt_asgd: average the iterates from when validation stops improving
                                       # (AWD-LSTM's NT-ASGD); evaluation, samples and checkpoints' best use it
  c.optimizer.nonmono = 5              # nt_asgd: start when validation is worse than the best before the last N checks

  c.train = ml_collections.ConfigDict()
  c.train.num_epochs = 160             # passes over the training tokens
  c.train.log_every_epochs = 1         # progress line (epoch k/N, step, loss, perplexity, tokens/s, ETA) every N epochs
  c.train.progress_every_sec = 10.0    # inside an epoch longer than this, a progress line every N seconds (0: off)
  c.train.plot_every_sec = 30.0        # redraw <workdir>/perplexity.png at logging epochs at most this often (and last)
  c.train.quiet = False                # no progress lines or samples on stdout (scripted use); files as ever
  c.train.log_batch_perplexity = False # also log d2l 1.x's train measure: mean of per-batch perplexities, last half
  c.train.eval_every_epochs = 0        # validation perplexity every N epochs (0: only at the end)
  c.train.generate_every_epochs = 40   # greedy samples for the prefixes every N epochs (0: only at the end)
  c.train.checkpoint_every_epochs = 20 # checkpoint at the end of every N epochs (and always at the last)
  c.train.checkpoint_every_steps = 0   # also checkpoint every N steps within epochs (0: off)
  c.train.keep_checkpoints = 3         # keep the last N checkpoints, plus the best by (validation) perplexity
  c.train.max_loss = 0.0               # stop when the epoch's mean loss (nats/token) exceeds this (0: ~88.7, exp overflow)
  c.train.resume = True                # resume from the workdir's latest checkpoint; False: set old ones aside, start fresh

  c.generate = ml_collections.ConfigDict()
  c.generate.prefixes = ("traveller", "time traveller")  # the book's prefixes for this corpus
  c.generate.num_tokens = 50           # tokens generated after each prefix
  c.generate.method = "greedy"         # greedy (the book) | sample (with top_k > 0: among the k most likely)
  c.generate.temperature = 1.0         # sample: logits divided by this
  c.generate.top_k = 0                 # sample: only the k most likely tokens (0: all)
  return c


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  config.lock()
  return config


def parse_arg(arg: str | None, **defaults: str) -> ml_collections.ConfigDict:
  """Parses an experiment variant ``"key=value,key=value"`` (the text after ``FILE.py:``) over ``defaults``.

  An unknown key or a malformed pair is an error that lists the valid keys.
  """
  values = dict(defaults)
  for pair in filter(None, (arg or "").split(",")):
    key, sep, value = pair.partition("=")
    if not sep or key not in defaults:
      raise ValueError(f"Bad experiment variant {pair!r}; write key=value with keys from {sorted(defaults)}.")
    values[key] = value
  return ml_collections.ConfigDict(values)


def load_experiment(path: str | pathlib.Path):
  """The experiment file at ``path`` as a module (its ``get_config``, and ``sweep`` where it has one)."""
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def experiment_config(spec: str | pathlib.Path) -> ml_collections.ConfigDict:
  """``"FILE.py[:variant]"`` -> that experiment's ``get_config(variant)`` (``get_config()`` without a variant)."""
  path, _, arg = str(spec).partition(":")
  module = load_experiment(path)
  return module.get_config(arg) if arg else module.get_config()


def differences(saved: dict, config: ml_collections.ConfigDict, sections: Sequence[str],
                saved_as: str = "before") -> list[str]:
  """``"key: {saved_as} X, now Y"`` for every leaf under ``sections`` where a saved config dict and ``config`` differ.

  A key the saved config lacks (a field added since) reads as its ``default_config()`` value, which by convention
  keeps the earlier behaviour; a key only the saved config has reads as None now.
  """
  current, found = config.to_dict(), []

  def with_defaults(defaults, tree):
    if not isinstance(defaults, dict) or not isinstance(tree, dict):
      return tree
    return {**defaults, **{key: with_defaults(defaults.get(key), value) for key, value in tree.items()}}

  saved = with_defaults(default_config().to_dict(), saved)

  def compare(prefix, a, b):
    if isinstance(a, dict) and isinstance(b, dict):
      for key in sorted(set(a) | set(b)):
        compare(f"{prefix}.{key}" if prefix else key, a.get(key), b.get(key))
    elif (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b):
      found.append(f"{prefix}: {saved_as} {a!r}, now {b!r}")

  def at(tree, path):
    for part in path.split("."):
      tree = tree.get(part) if isinstance(tree, dict) else None
    return tree

  for section in sections:  # "data", or a dotted leaf such as "train.num_epochs"
    compare(section, at(saved, section), at(current, section))
  return found


def field_paths(config: ml_collections.ConfigDict | None = None) -> list[str]:
  """Every leaf's dotted path (``optimizer.learning_rate``, ...) of a config (the default one when None)."""
  def walk(node, prefix):
    for key, value in node.items():
      if isinstance(value, ml_collections.ConfigDict):
        yield from walk(value, f"{prefix}{key}.")
      else:
        yield f"{prefix}{key}"
  return list(walk(config if config is not None else default_config(), ""))


def suggest_field(path: str) -> str:
  """``"no field train.learning_rate; did you mean optimizer.learning_rate?"`` (or the closest paths)."""
  fields = field_paths()
  leaf = path.split(".")[-1]
  same_leaf = [f for f in fields if f.split(".")[-1] == leaf]
  close = same_leaf or difflib.get_close_matches(path, fields, n=3, cutoff=0.6)
  hint = f"; did you mean {' or '.join(close)}?" if close else "; the fields are listed in lstm_jax/config.py."
  return f"no config field {path}{hint}"
