"""One validation pass over a resolved config and its loaded corpus, before anything is written to the workdir.

Every field's type and range, and the relations between fields and the data (an epoch holds at least one
``batch_size x num_steps`` minibatch, the validation split at least one when asked, ``generate.top_k`` fits the
vocabulary, the prefixes' tokens are in it). Each failure is one line naming the field, the value, the limit and
the fix; all failures are reported together as one ``ConfigError``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import ml_collections

from lstm_jax import cells
from lstm_jax.cells import initializers
from lstm_jax.cells import matmul
from lstm_jax.data import batching
from lstm_jax.data import corpora
from lstm_jax.data import pipeline
from lstm_jax.models import factory as models
from lstm_jax.models import regularizers
from lstm_jax.models import scratch as model_lib
from lstm_jax.train import optimizer as optimizer_lib


class ConfigError(ValueError):
  """The config (or its relation to the data) is invalid; one line per problem, each naming field and fix."""


def _integer(low: int) -> Callable[[Any], bool]:
  return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number(low: float, high: float = math.inf, low_open: bool = False) -> Callable[[Any], bool]:
  def check(v):
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
      return False
    return (v > low if low_open else v >= low) and v <= high
  return check


def _one_of(choices) -> Callable[[Any], bool]:
  return lambda v: v in choices


def _boolean(v: Any) -> bool:
  return isinstance(v, bool)


def _text(v: Any) -> bool:
  return isinstance(v, str) and bool(v)


# (field, test, what it must be)
RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("seed", _integer(0), "an integer >= 0"),
    ("data.corpus", _text, "a corpus name or a path (non-empty text)"),
    ("data.tokens", _one_of(corpora.TOKENS), f"one of {corpora.TOKENS}"),
    ("data.max_tokens", _integer(-1), "an integer (<= 0: all tokens)"),
    ("data.carry_state", lambda v: v is None or _boolean(v), "None (follow the sampling), True or False"),
    ("data.batch_size", _integer(1), "an integer >= 1"),
    ("data.num_steps", _integer(1), "an integer >= 1"),
    ("data.num_val_tokens", _integer(0), "an integer >= 0"),
    ("data.val_fraction", _number(0.0, 0.99), "a number in [0, 0.99]"),
    ("data.num_train_windows", _integer(1), "an integer >= 1"),
    ("data.num_val_windows", _integer(0), "an integer >= 0"),
    ("data.sampling", _one_of(batching.SAMPLINGS), f"one of {batching.SAMPLINGS}"),
    ("data.edition", _one_of(corpora.EDITIONS), f"one of {corpora.EDITIONS}"),
    ("model.implementation", _one_of(models.IMPLEMENTATIONS), f"one of {models.IMPLEMENTATIONS}"),
    ("model.cell", _one_of(cells.REGISTRY), f"one of {tuple(cells.REGISTRY)}"),
    ("model.hidden_size", _integer(1), "an integer >= 1"),
    ("model.num_layers", _integer(1), "an integer >= 1"),
    ("model.embed_dim", lambda v: v is None or _integer(1)(v), "None (one-hot inputs) or an integer >= 1"),
    ("model.dropout", _number(0.0, 0.99), "a number in [0, 0.99]"),
    *((f"model.{name}", _number(0.0, 0.99), "a number in [0, 0.99]") for name in regularizers.RATES),
    ("model.tie_weights", _boolean, "True or False"),
    ("model.ar", _number(0.0), "a number >= 0"),
    ("model.tar", _number(0.0), "a number >= 0"),
    ("model.unroll", _integer(1), "an integer >= 1"),
    ("model.recurrence", _one_of(model_lib.RECURRENCES), f"one of {model_lib.RECURRENCES}"),
    ("model.init_scheme", _one_of(initializers.SCHEMES), f"one of {initializers.SCHEMES}"),
    ("model.forget_bias", _number(-math.inf), "a finite number"),
    ("model.matmul_dtype", _one_of(matmul.MATMUL_DTYPES), f"one of {matmul.MATMUL_DTYPES}"),
    ("optimizer.name", _one_of(optimizer_lib.OPTIMIZERS), f"one of {optimizer_lib.OPTIMIZERS}"),
    ("optimizer.learning_rate", _number(0.0, low_open=True), "a finite number > 0"),
    ("optimizer.clip_norm", _number(-math.inf), "a finite number (<= 0: no clipping)"),
    ("optimizer.weight_decay", _number(0.0), "a number >= 0"),
    ("optimizer.schedule", _one_of(optimizer_lib.SCHEDULES), f"one of {optimizer_lib.SCHEDULES}"),
    ("optimizer.warmup_steps", _integer(0), "an integer >= 0"),
    ("optimizer.decay_steps", _integer(1), "an integer >= 1"),
    ("optimizer.end_fraction", _number(0.0, 1.0), "a number in [0, 1]"),
    ("optimizer.decay_rate", _number(0.0, 1.0, low_open=True), "a number in (0, 1]"),
    ("optimizer.averaging", _one_of(("none", "nt_asgd")), "none or nt_asgd"),
    ("optimizer.nonmono", _integer(1), "an integer >= 1"),
    ("train.num_epochs", _integer(1), "an integer >= 1"),
    ("train.log_every_epochs", _integer(0), "an integer >= 0"),
    ("train.eval_every_epochs", _integer(0), "an integer >= 0"),
    ("train.generate_every_epochs", _integer(0), "an integer >= 0"),
    ("train.checkpoint_every_epochs", _integer(0), "an integer >= 0"),
    ("train.checkpoint_every_steps", _integer(0), "an integer >= 0"),
    ("train.keep_checkpoints", _integer(1), "an integer >= 1"),
    ("train.resume", _boolean, "True or False"),
    ("train.quiet", _boolean, "True or False"),
    ("train.log_batch_perplexity", _boolean, "True or False"),
    ("train.progress_every_sec", _number(0.0), "a number >= 0"),
    ("train.plot_every_sec", _number(0.0), "a number >= 0"),
    ("train.max_loss", _number(0.0), "a number >= 0 (0: only an overflowing perplexity stops the run)"),
    ("generate.prefixes", lambda v: isinstance(v, (tuple, list)) and all(isinstance(x, str) for x in v),
     "a tuple of strings"),
    ("generate.num_tokens", _integer(0), "an integer >= 0"),
    ("generate.method", _one_of(("greedy", "sample")), "greedy or sample"),
    ("generate.temperature", _number(0.0, low_open=True), "a number > 0"),
    ("generate.top_k", _integer(0), "an integer >= 0 (0: all tokens)"),
]


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
  node = config
  for part in path.split("."):
    node = node[part]
  return node


def config_problems(config: ml_collections.ConfigDict) -> list[str]:
  """One line per field outside its range: ``--config.FIELD=VALUE: must be LIMIT; set ...``."""
  problems = []
  for path, valid, limit in RULES:
    try:
      value = _get(config, path)
    except (KeyError, AttributeError):
      continue  # a field this config does not have (an older experiment): its default applies
    if not valid(value):
      problems.append(f"--config.{path}={value!r}: must be {limit}; set --config.{path}=... accordingly.")
  if not problems:  # the regularizers' relations to the other model fields
    settings = dict(config.model.items())
    problems = regularizers.problems(settings, settings.pop("implementation", "scratch"))
  if config.optimizer.get("averaging", "none") != "none" and config.train.eval_every_epochs < 1:
    problems.append(f"--config.optimizer.averaging={config.optimizer.averaging} starts averaging when validation "
                    f"stops improving; set --config.train.eval_every_epochs=1 (and a validation split).")
  return problems


def data_problems(config: ml_collections.ConfigDict, corpus: corpora.Corpus) -> list[str]:
  """Relations between the config and the loaded corpus."""
  d, problems = config.data, []
  vocab_size, train_tokens = len(corpus.vocab), len(corpus.train_ids)
  if train_tokens < 2:
    return [f"data.corpus={d.corpus!r} yields {train_tokens} training tokens after the {d.edition} preprocessing; "
            f"a language model needs at least 2 (point --config.data.corpus at a longer text)."]
  try:
    batches = pipeline.epoch_batches(config, corpus, epoch=1)
  except (ValueError, ZeroDivisionError):
    batches = []
  if not batches:
    problems.append(f"--config.data.num_steps={d.num_steps} with --config.data.batch_size={d.batch_size}: the "
                    f"{train_tokens} training tokens ({d.sampling} sampling) give no minibatch of "
                    f"{d.batch_size} x {d.num_steps} per epoch; lower data.batch_size or data.num_steps (at most "
                    f"about {max(1, (train_tokens - 1) // d.batch_size - 1)} steps at this batch size).")
  held_out = d.num_val_tokens > 0 or d.get("val_fraction", 0.0) > 0
  if held_out and not pipeline.validation_batches(config, corpus):
    problems.append(f"The validation split ({len(corpus.val_ids)} tokens) holds no {d.batch_size} x {d.num_steps} "
                    f"minibatch; raise data.num_val_tokens / data.val_fraction or lower data.batch_size.")
  g = config.generate
  if g.top_k > vocab_size:
    problems.append(f"--config.generate.top_k={g.top_k}: must be at most the vocabulary size {vocab_size}; set "
                    f"--config.generate.top_k={min(5, vocab_size)} (or 0: all tokens).")
  for prefix in g.prefixes:
    unknown = sorted({t for t in (list(prefix) if corpus.vocab.separator == "" else prefix.split())
                      if t not in corpus.vocab.index}) if corpus.vocab.unk_id is None else []
    if unknown or not prefix:
      problems.append(f"--config.generate.prefixes holds {prefix!r}: " + (
          f"tokens {unknown} are not in the corpus's vocabulary" if unknown else "an empty prefix") +
          "; use prefixes written with the corpus's own characters (after its edition's preprocessing).")
  return problems


def check(config: ml_collections.ConfigDict, corpus: corpora.Corpus | None = None) -> None:
  """Raises ``ConfigError`` listing every problem of the config (and, given the corpus, of their relation)."""
  problems = config_problems(config)
  if corpus is not None and not problems:
    problems = data_problems(config, corpus)
  if problems:
    raise ConfigError("\n".join(problems))


def check_model(model) -> None:
  """Raises ``ConfigError`` when the built model cannot run as configured on this platform (an explicit
  ``recurrence=pallas`` outside the kernels' envelope)."""
  problem = model.recurrence_problem()
  if problem:
    raise ConfigError(problem)
