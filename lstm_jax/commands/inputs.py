"""What the evaluate and generate commands read, checked: the checkpoint step, the text or split, the decoding
settings. Each problem is a ``ValueError`` of one line naming the flag and the fix (the commands exit 2), and a run
that is missing or unreadable is a ``CheckpointError`` (exit 1). Nothing here writes."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator

from lstm_jax.data import corpora
from lstm_jax.data import pipeline
from lstm_jax.data.vocab import Vocab
from lstm_jax.train import checkpoint as checkpoint_lib


def parse_step(text: str | None) -> int | str | None:
  """``--step``: None or "" (the latest), "best", or a step number."""
  if text in (None, ""):
    return None
  if text == "best":
    return "best"
  if not text.isdigit():
    raise ValueError(f"--step={text}: give a checkpoint step number, 'best', or leave it out for the latest.")
  return int(text)


def text_ids(path: str, vocab: Vocab, config) -> Any:
  """The ids of a UTF-8 text file after the run's edition preprocessing; an empty file is an error."""
  try:
    text = corpora.as_path(path).read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f"--text_file={path} cannot be read as UTF-8 text ({type(e).__name__}: {e}).") from e
  try:
    ids = corpora.encode_text(text, vocab, config.data.edition)
  except ValueError as e:
    raise ValueError(f"--text_file={path}: {e}") from e
  if len(ids) < 2:
    raise ValueError(f"--text_file={path} holds {len(ids)} tokens after the {config.data.edition} preprocessing; "
                     f"evaluation needs at least 2.")
  return ids


def split_ids(config, split: str | None, workdir) -> tuple[Any, str]:
  """``(ids, description)`` of a corpus split; no ``split`` means validation where the run has one, else
  training. Warns (one line) when the corpus differs from the one the run trained on."""
  corpus = corpora.load(config.data)
  has_val = len(corpus.val_ids) > 1 or config.data.sampling == "windows"
  chosen = split or ("val" if has_val else "train")
  if chosen == "val" and not has_val:
    raise ValueError("--split=val: this run holds out no validation text; use --split=train or --text_file=FILE.")
  saved = checkpoint_lib.saved_fingerprint(workdir)
  if saved and saved != corpora.fingerprint(corpus, config.data.edition):
    print(f"warning: the corpus {config.data.corpus} differs from the one this run trained on (fingerprint "
          f"{saved[:12]}); the numbers below are for today's text.", flush=True)
  if chosen == "val" and config.data.sampling == "windows":
    batches = pipeline.validation_batches(config, corpus)
    ids = batches  # window batches are already cut
  else:
    ids = corpus.val_ids if chosen == "val" else corpus.train_ids
  note = "" if split else " (default: " + ("the run's validation split" if has_val else "no validation split") + ")"
  return ids, f"{chosen} split{note}"


def check_decoding(vocab: Vocab, prefixes: list[str], num_tokens: int, method: str, temperature: float,
                   top_k: int, edition: str) -> list[str]:
  """Range checks of the generate flags; returns the prefixes after the edition's preprocessing."""
  if num_tokens < 0:
    raise ValueError(f"--num_tokens={num_tokens}: give a number of tokens >= 0.")
  if not temperature > 0:
    raise ValueError(f"--temperature={temperature}: must be > 0 (use --method=greedy for the most likely token).")
  if not 0 <= top_k <= len(vocab):
    raise ValueError(f"--top_k={top_k}: must lie in [0, {len(vocab)}] (the vocabulary size; 0: all tokens).")
  if method not in ("greedy", "sample"):
    raise ValueError(f"--method={method}: choose greedy or sample.")
  normalized = []
  for prefix in prefixes:
    text = corpora.normalize(prefix, edition)
    if not text:
      raise ValueError("--prefix is empty; give at least one character to continue.")
    corpora.encode_text(text, vocab, edition)  # names tokens outside the vocabulary
    normalized.append(text)
  return normalized


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
  """The commands' exits: a missing or unreadable run or corpus is one line and status 1, a bad flag value one
  line and status 2; nothing else is caught."""
  try:
    yield
  except (checkpoint_lib.CheckpointError, corpora.CorpusError, OSError) as e:
    sys.exit(f"error: {e}")
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
