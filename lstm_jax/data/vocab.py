"""A deterministic token vocabulary with optional ``<unk>``, encode/decode, and a JSON form for checkpoints."""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Iterable, Sequence

import numpy as np

UNK = "<unk>"


@dataclasses.dataclass(frozen=True)
class Vocab:
  """``tokens[i]`` is the token with id ``i``. ``separator`` joins decoded tokens ("" for characters)."""
  tokens: tuple[str, ...]
  separator: str = ""

  def __post_init__(self):
    if len(set(self.tokens)) != len(self.tokens):
      raise ValueError("Vocabulary tokens must be distinct.")

  @property
  def index(self) -> dict[str, int]:
    return {t: i for i, t in enumerate(self.tokens)}

  @property
  def unk_id(self) -> int | None:
    return self.index.get(UNK)

  def __len__(self) -> int:
    return len(self.tokens)

  def encode(self, tokens: Iterable[str]) -> np.ndarray:
    """Tokens (a string of characters, or a list of words) -> int32 ids ``[n]``; unknown ones map to ``<unk>``."""
    index, unk = self.index, self.unk_id
    ids = []
    for t in tokens:
      i = index.get(t, unk)
      if i is None:
        raise KeyError(f"Token {t!r} is not in the vocabulary and the vocabulary has no {UNK}; "
                       "use only tokens from the training corpus.")
      ids.append(i)
    return np.asarray(ids, np.int32)

  def decode(self, ids: Iterable[int]) -> str:
    return self.separator.join(self.tokens[int(i)] for i in ids)

  def to_json(self) -> str:
    return json.dumps({"tokens": list(self.tokens), "separator": self.separator}, ensure_ascii=False)

  @classmethod
  def from_json(cls, text: str) -> "Vocab":
    d = json.loads(text)
    return cls(tokens=tuple(d["tokens"]), separator=d.get("separator", ""))


def sorted_vocab(tokens: Sequence[str], with_unk: bool, separator: str = "") -> Vocab:
  """Distinct tokens in sorted order (``<unk>`` sorted in with them, as d2l 1.x does)."""
  distinct = set(tokens) | ({UNK} if with_unk else set())
  return Vocab(tuple(sorted(distinct)), separator)


def frequency_vocab(tokens: Sequence[str], separator: str = "") -> Vocab:
  """``<unk>`` first, then tokens by descending count, ties by first occurrence (d2l 0.14.4+)."""
  counts = collections.Counter(tokens)  # insertion order = first occurrence; sorted() is stable
  ordered = sorted(counts, key=lambda t: -counts[t])
  return Vocab((UNK,) + tuple(t for t in ordered if t != UNK), separator)
