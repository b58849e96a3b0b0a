"""Corpus files and the book's preprocessing.

Resolution order for a named corpus (``timemachine``, ``jaychou``, ``tinyshakespeare``):
1. the directory given by ``config.data.data_dir`` (``--config.data.data_dir=DIR``);
2. the directory in the environment variable ``LSTM_JAX_DATA_DIR``;
3. the download cache ``$LSTM_JAX_CACHE`` (default ``~/.cache/lstm_jax``);
4. a download from the canonical URL into that cache (skipped when ``LSTM_JAX_OFFLINE=1``).
Every copy of a named corpus, wherever found, must match its SHA-1. Any other value of ``corpus`` is a path to a
plain-text file (UTF-8), read as is.

Editions (``config.data.edition``), each the preprocessing of one era of *Dive into Deep Learning*:
- ``d2l_zh1``:  ``\\n``/``\\r`` -> space, first ``max_tokens`` characters, vocab = distinct characters (no ``<unk>``).
                d2l-zh 1.x; the Jay Chou lyrics (vocab 1027).
- ``d2l_2019``: as ``d2l_zh1`` but lowercased (early-2019 d2l-en; the Time Machine gives vocab 43).
- ``d2l_0x``:   per line ``[^A-Za-z]+`` -> space, strip, lowercase; lines joined without a separator; vocab of the
                whole book by frequency with ``<unk>`` = 0 (28 tokens); first ``max_tokens`` tokens (d2l 0.14.4+).
- ``d2l_1x``:   whole text ``[^A-Za-z]+`` -> space, lowercase; vocab ``sorted({<unk>} | chars)`` (28); the
                stream is kept whole (d2l 1.x cuts it into windows, see ``batching``).
- ``raw``:      the text unchanged; vocab = sorted distinct tokens of the whole text plus ``<unk>``; tokens are characters
                or, with ``data.tokens = "word"``, whitespace-separated words (decoded joined by spaces).
The set-ordered vocabularies of the book (``d2l_zh1``, ``d2l_2019``) are made deterministic by sorting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pathlib
import re
import urllib.request
import zipfile

import numpy as np
from etils import epath

from lstm_jax.data import vocab as vocab_lib


@dataclasses.dataclass(frozen=True)
class CorpusFile:
  filename: str
  url: str
  sha1: str
  member: str | None = None  # the text file inside a zip archive


KNOWN_CORPORA = {
    "timemachine": CorpusFile(
        "timemachine.txt", "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt",
        "090b5e7e70c295757f55df93cb0a180b9691891a"),
    "jaychou": CorpusFile(
        "jaychou_lyrics.txt.zip",
        "https://raw.githubusercontent.com/d2l-ai/d2l-zh/v1.0.0/data/jaychou_lyrics.txt.zip",
        "9529987e701a4f37048ab778270a5dde9a762a0b", member="jaychou_lyrics.txt"),
    # Karpathy's char-rnn corpus (1,115,394 characters, 65 symbols); use it with edition "raw".
    "tinyshakespeare": CorpusFile(
        "tinyshakespeare.txt", "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "04486597058d11dcc2c556b1d0433891eb639d2e"),
}
EDITIONS = ("d2l_zh1", "d2l_2019", "d2l_0x", "d2l_1x", "raw")


class CorpusError(RuntimeError):
  """A corpus could not be found, downloaded or verified; the message says how to supply it."""


def as_path(location: str | os.PathLike) -> pathlib.Path | epath.Path:
  """A local path as ``pathlib.Path`` (``~`` expanded), a URI (``gs://bucket/data``) as ``etils.epath.Path``."""
  if "://" in str(location):
    return epath.Path(location)
  return pathlib.Path(location).expanduser()


def sha1_of(path: pathlib.Path) -> str:
  return hashlib.sha1(path.read_bytes()).hexdigest()


def cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("LSTM_JAX_CACHE", pathlib.Path.home() / ".cache" / "lstm_jax"))


def _verified(path: pathlib.Path, spec: CorpusFile) -> pathlib.Path:
  actual = sha1_of(path)
  if actual != spec.sha1:
    raise CorpusError(
        f"Checksum mismatch for {path}: SHA-1 {actual}, expected {spec.sha1}. The file is corrupt or a different "
        f"version; delete it and supply the original (download {spec.url}).")
  return path


def resolve(name: str, data_dir: str | None = None) -> pathlib.Path:
  """Finds (or downloads) the file of a named corpus and verifies its SHA-1; returns its path."""
  spec = KNOWN_CORPORA[name]
  searched = []
  for directory in (data_dir, os.environ.get("LSTM_JAX_DATA_DIR"), cache_dir()):
    if not directory:
      continue
    candidate = as_path(directory) / spec.filename
    searched.append(str(candidate))
    if candidate.is_file():
      return _verified(candidate, spec)
  target = cache_dir() / spec.filename
  how = (f"Put {spec.filename} (SHA-1 {spec.sha1}, from {spec.url}) in a directory and pass it with "
         f"--config.data.data_dir=DIR or the environment variable LSTM_JAX_DATA_DIR.")
  if os.environ.get("LSTM_JAX_OFFLINE") == "1":
    raise CorpusError(f"Corpus {name!r} not found; looked in: {', '.join(searched)}; downloads are off "
                      f"(LSTM_JAX_OFFLINE=1). {how}")
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(spec.url, timeout=30) as response:
      payload = response.read()
  except OSError as e:
    raise CorpusError(f"Corpus {name!r} not found (looked in: {', '.join(searched)}) and the download from "
                      f"{spec.url} failed: {e}. {how}") from e
  partial = target.with_suffix(target.suffix + ".part")
  partial.write_bytes(payload)
  try:
    _verified(partial, spec)
  except CorpusError:
    partial.unlink()
    raise
  partial.replace(target)
  return target


def read_text(corpus: str, data_dir: str | None = None) -> str:
  """The raw text of a named corpus, or of a UTF-8 file at the path ``corpus``."""
  if corpus in KNOWN_CORPORA:
    spec = KNOWN_CORPORA[corpus]
    path = resolve(corpus, data_dir)
    if spec.member:
      with path.open("rb") as file, zipfile.ZipFile(file) as archive:
        return archive.read(spec.member).decode("utf-8")
    return path.read_text(encoding="utf-8")
  path = as_path(corpus)
  if path.is_dir():
    listing = path.rglob("*") if isinstance(path, pathlib.Path) else path.glob("*")  # URIs: one level, no "**"
    files = sorted(f for f in listing if f.is_file() and not f.name.startswith("."))
    if not files:
      raise CorpusError(f"Corpus directory {path} holds no files; put UTF-8 text files in it.")
    return "\n".join(_read_utf8(f) for f in files)  # sorted paths: the same text on every machine
  if not path.is_file():
    raise CorpusError(f"Corpus {corpus!r} is neither a known corpus ({sorted(KNOWN_CORPORA)}) nor a readable "
                      f"file or directory. Set --config.data.corpus to one of those names or to a path to a UTF-8 "
                      f"text file or a directory of them.")
  return _read_utf8(path)


def _read_utf8(path: pathlib.Path) -> str:
  try:
    return path.read_text(encoding="utf-8")
  except UnicodeDecodeError as e:
    raise CorpusError(f"{path} is not UTF-8 text ({e}); convert it (e.g. iconv -t utf-8) or remove it from the "
                      f"corpus.") from e


def fingerprint(corpus: "Corpus", edition: str) -> str:
  """SHA-1 over the edition, the vocabulary and the token ids a run trains and validates on: a different text, a
  different preprocessing or a different vocabulary gives a different fingerprint."""
  digest = hashlib.sha1(edition.encode())
  digest.update("\x00".join(corpus.vocab.tokens).encode())
  digest.update(np.ascontiguousarray(corpus.train_ids, np.int32).tobytes())
  digest.update(np.ascontiguousarray(corpus.val_ids, np.int32).tobytes())
  return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A preprocessed corpus: vocabulary, training ids ``[n]`` and (possibly empty) validation ids ``[m]``."""
  vocab: vocab_lib.Vocab
  train_ids: np.ndarray
  val_ids: np.ndarray


_NON_LETTERS = re.compile(r"[^A-Za-z]+")


TOKENS = ("char", "word")


def preprocess(text: str, edition: str, max_tokens: int = 10000, num_val_tokens: int = 0,
               tokens: str = "char", val_fraction: float = 0.0) -> Corpus:
  """Applies an edition's preprocessing (see the module docstring). ``max_tokens <= 0`` keeps every token.

  ``num_val_tokens``: the tokens after the training ones form a validation stream (editions other than
  ``d2l_1x``, whose validation windows are defined by its batching). Validation characters outside a
  vocabulary without ``<unk>`` are dropped.
  """
  limit = max_tokens if max_tokens > 0 else None
  if edition == "raw":
    return _preprocess_raw(text, limit, num_val_tokens, tokens, val_fraction)
  if edition not in EDITIONS:
    raise ValueError(f"Unknown edition {edition!r}; choose one of {EDITIONS} (--config.data.edition=NAME).")
  chars = _normalize(text, edition, line_separator="")
  if edition == "d2l_1x":
    return _corpus(vocab_lib.sorted_vocab(chars, with_unk=True), chars, "")
  train = chars[:limit]
  val = "" if limit is None else chars[limit:limit + num_val_tokens]
  if edition == "d2l_0x":
    return _corpus(vocab_lib.frequency_vocab(chars), train, val)
  vocab = vocab_lib.sorted_vocab(train, with_unk=False)
  return _corpus(vocab, train, "".join(c for c in val if c in vocab.index))


def _preprocess_raw(text: str, limit: int | None, num_val_tokens: int, tokens: str, val_fraction: float) -> Corpus:
  """The ``raw`` edition: characters or words as they are, a vocabulary with ``<unk>`` of all of them."""
  if tokens not in TOKENS:
    raise ValueError(f"Unknown data.tokens {tokens!r}; choose one of {TOKENS} (--config.data.tokens=NAME).")
  units = list(text) if tokens == "char" else text.split()
  if val_fraction:
    if not 0.0 < val_fraction < 1.0:
      raise ValueError(f"data.val_fraction={val_fraction} must lie in (0, 1); 0.1 holds out the last 10%.")
    limit, num_val_tokens = int(len(units) * (1.0 - val_fraction)), len(units)
  vocab = vocab_lib.sorted_vocab(units, with_unk=True, separator="" if tokens == "char" else " ")
  return _corpus(vocab, units[:limit], [] if limit is None else units[limit:limit + num_val_tokens])


def _corpus(vocab: vocab_lib.Vocab, train, val) -> Corpus:
  return Corpus(vocab, vocab.encode(train), vocab.encode(val))


def normalize(text: str, edition: str) -> str:
  """The character-level part of an edition's preprocessing, for text read later (evaluation files, prefixes):
  ``d2l_0x``'s lines are joined with a space here."""
  return _normalize(text, edition, line_separator=" ")


def _normalize(text: str, edition: str, line_separator: str) -> str:
  """The character-level part of an edition's preprocessing; ``d2l_0x`` joins its lines with ``line_separator``
  (the corpus: none)."""
  if edition in ("d2l_zh1", "d2l_2019"):
    text = text.replace("\n", " ").replace("\r", " ")
    return text.lower() if edition == "d2l_2019" else text
  if edition == "d2l_0x":
    return line_separator.join(_NON_LETTERS.sub(" ", line).strip().lower() for line in text.splitlines())
  if edition == "d2l_1x":
    return _NON_LETTERS.sub(" ", text).lower()
  return text


def encode_text(text: str, vocab: vocab_lib.Vocab, edition: str) -> np.ndarray:
  """``text`` through the edition's preprocessing into ids ``[n]``; tokens outside a vocabulary without ``<unk>``
  are a ValueError that names them."""
  units = list(normalize(text, edition)) if vocab.separator == "" else text.split()
  if vocab.unk_id is None:
    unknown = sorted(set(units) - set(vocab.tokens))
    if unknown:
      raise ValueError(f"{len(unknown)} token(s) are not in the run's vocabulary: {unknown[:10]}; use text written "
                       f"with the corpus's characters.")
  return vocab.encode(units)


def load(data_config) -> Corpus:
  """Reads and preprocesses the corpus a ``config.data`` section names."""
  text = read_text(data_config.corpus, data_config.get("data_dir") or None)
  if data_config.get("tokens", "char") != "char" and data_config.edition != "raw":
    raise ValueError(f"data.tokens={data_config.tokens!r} needs data.edition='raw' (the book's editions are "
                     f"character-level); set --config.data.edition=raw.")
  if data_config.get("val_fraction", 0.0) and data_config.edition != "raw":
    raise ValueError("data.val_fraction needs data.edition='raw'; the book's editions use data.num_val_tokens.")
  return preprocess(text, data_config.edition, data_config.max_tokens, data_config.num_val_tokens,
                    data_config.get("tokens", "char"), data_config.get("val_fraction", 0.0))
