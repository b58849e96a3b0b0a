"""Corpus resolution (flag, env, cache, checksum), edition preprocessing and the vocabulary."""

import hashlib
import zipfile

import numpy as np
import pytest

from lstm_jax.data import corpora
from lstm_jax.data import vocab as vocab_lib


def test_vocab_round_trip_and_unknown_tokens():
  vocab = vocab_lib.sorted_vocab("hello world", with_unk=True)
  assert vocab.tokens[0] == " " and vocab_lib.UNK in vocab.tokens
  ids = vocab.encode("hello")
  assert ids.dtype == np.int32 and vocab.decode(ids) == "hello"
  assert vocab.decode(vocab.encode("hex")) == "he" + vocab_lib.UNK  # 'x' is unknown
  assert vocab_lib.Vocab.from_json(vocab.to_json()) == vocab
  no_unk = vocab_lib.sorted_vocab("abc", with_unk=False)
  with pytest.raises(KeyError, match="not in the vocabulary"):
    no_unk.encode("abz")


def test_frequency_vocab_orders_by_count_then_first_occurrence():
  vocab = vocab_lib.frequency_vocab("bbaacccd")
  assert vocab.tokens == ("<unk>", "c", "b", "a", "d")


def test_editions_preprocess_as_the_book(tiny_text):
  c2019 = corpora.preprocess(tiny_text, "d2l_2019", max_tokens=100)
  assert len(c2019.train_ids) == 100
  text2019 = c2019.vocab.decode(c2019.train_ids)
  assert text2019 == tiny_text.replace("\n", " ").lower()[:100]
  assert "<unk>" not in c2019.vocab.tokens and "!" in text2019 + "".join(c2019.vocab.tokens)

  czh = corpora.preprocess(tiny_text, "d2l_zh1", max_tokens=50)
  assert czh.vocab.decode(czh.train_ids) == tiny_text.replace("\n", " ")[:50]  # case kept

  c0x = corpora.preprocess("Ab, c!\nD e.\n", "d2l_0x", max_tokens=0)
  assert c0x.vocab.decode(c0x.train_ids) == "ab cd e"  # lines stripped and joined without a separator
  assert c0x.vocab.tokens[0] == "<unk>"

  c1x = corpora.preprocess("Ab, c!\nD e.\n", "d2l_1x")
  assert c1x.vocab.decode(c1x.train_ids) == "ab c d e "
  assert c1x.vocab.tokens[:2] == (" ", "<unk>")

  with pytest.raises(ValueError, match="Unknown edition"):
    corpora.preprocess(tiny_text, "d2l_9x")


def test_validation_stream_follows_training_tokens(tiny_text):
  corpus = corpora.preprocess(tiny_text, "raw", max_tokens=200, num_val_tokens=50)
  assert corpus.vocab.decode(corpus.val_ids) == tiny_text[200:250]


def _fake_known_corpus(monkeypatch, tmp_path, payload: bytes):
  spec = corpora.CorpusFile("fake.txt", "http://example.invalid/fake.txt", hashlib.sha1(payload).hexdigest())
  monkeypatch.setitem(corpora.KNOWN_CORPORA, "fake", spec)
  monkeypatch.setenv("LSTM_JAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("LSTM_JAX_OFFLINE", "1")
  monkeypatch.delenv("LSTM_JAX_DATA_DIR", raising=False)
  return spec


def test_resolution_order_flag_then_env(monkeypatch, tmp_path):
  _fake_known_corpus(monkeypatch, tmp_path, b"hello")
  flag_dir, env_dir = tmp_path / "flag", tmp_path / "env"
  for d in (flag_dir, env_dir):
    d.mkdir()
    (d / "fake.txt").write_bytes(b"hello")
  monkeypatch.setenv("LSTM_JAX_DATA_DIR", str(env_dir))
  assert corpora.resolve("fake", str(flag_dir)) == flag_dir / "fake.txt"
  assert corpora.resolve("fake") == env_dir / "fake.txt"
  assert corpora.read_text("fake") == "hello"


def test_missing_corpus_says_where_it_looked_and_how_to_supply_it(monkeypatch, tmp_path):
  _fake_known_corpus(monkeypatch, tmp_path, b"hello")
  with pytest.raises(corpora.CorpusError) as error:
    corpora.resolve("fake", str(tmp_path / "nowhere"))
  message = str(error.value)
  assert str(tmp_path / "nowhere" / "fake.txt") in message and "LSTM_JAX_DATA_DIR" in message
  assert "--config.data.data_dir" in message


def test_checksum_mismatch_is_an_error(monkeypatch, tmp_path):
  _fake_known_corpus(monkeypatch, tmp_path, b"hello")
  (tmp_path / "fake.txt").write_bytes(b"hellO")
  with pytest.raises(corpora.CorpusError, match="Checksum mismatch"):
    corpora.resolve("fake", str(tmp_path))


def test_download_is_verified_and_cached(monkeypatch, tmp_path):
  spec = _fake_known_corpus(monkeypatch, tmp_path, b"payload")
  monkeypatch.delenv("LSTM_JAX_OFFLINE")

  class Response:
    def __init__(self, body):
      self.body = body
    def read(self):
      return self.body
    def __enter__(self):
      return self
    def __exit__(self, *args):
      return False

  monkeypatch.setattr(corpora.urllib.request, "urlopen", lambda url, timeout: Response(b"payload"))
  path = corpora.resolve("fake")
  assert path == tmp_path / "cache" / spec.filename and path.read_bytes() == b"payload"
  monkeypatch.setattr(corpora.urllib.request, "urlopen", lambda url, timeout: Response(b"tampered"))
  path.unlink()
  with pytest.raises(corpora.CorpusError, match="Checksum mismatch"):
    corpora.resolve("fake")
  assert not path.exists()  # a bad download is never left in the cache


def test_any_text_file_by_path(tmp_path):
  path = tmp_path / "my.txt"
  path.write_text("abc abc", encoding="utf-8")
  assert corpora.read_text(str(path)) == "abc abc"
  with pytest.raises(corpora.CorpusError, match="neither a known corpus"):
    corpora.read_text(str(tmp_path / "missing.txt"))


def test_directory_of_files_is_one_corpus_in_sorted_path_order(tmp_path):
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "2.txt").write_text("second", encoding="utf-8")
  (tmp_path / "a.txt").write_text("first", encoding="utf-8")
  (tmp_path / ".hidden").write_text("never", encoding="utf-8")
  assert corpora.read_text(str(tmp_path)) == "first\nsecond"
  (tmp_path / "c.bin").write_bytes(b"\xff\xfe\x00")
  with pytest.raises(corpora.CorpusError, match="not UTF-8"):
    corpora.read_text(str(tmp_path))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(corpora.CorpusError, match="holds no files"):
    corpora.read_text(str(empty))


def test_word_tokens_and_validation_fraction():
  text = "the cat sat on the mat the end"
  corpus = corpora.preprocess(text, "raw", max_tokens=0, tokens="word", val_fraction=0.25)
  assert corpus.vocab.separator == " " and "cat" in corpus.vocab.index and vocab_lib.UNK in corpus.vocab.index
  assert corpus.vocab.decode(corpus.train_ids) == "the cat sat on the mat"
  assert corpus.vocab.decode(corpus.val_ids) == "the end"
  chars = corpora.preprocess("abcdefghij", "raw", max_tokens=0, val_fraction=0.3)
  assert chars.vocab.decode(chars.train_ids) == "abcdefg" and chars.vocab.decode(chars.val_ids) == "hij"
  with pytest.raises(ValueError, match="data.tokens"):
    corpora.preprocess(text, "raw", tokens="bytes")
  with pytest.raises(ValueError, match="val_fraction"):
    corpora.preprocess(text, "raw", val_fraction=1.5)


def test_zip_member_is_read(monkeypatch, tmp_path):
  archive = tmp_path / "lyrics.zip"
  with zipfile.ZipFile(archive, "w") as z:
    z.writestr("lyrics.txt", "想要有直升机\n想要和你飞")
  spec = corpora.CorpusFile("lyrics.zip", "http://example.invalid", hashlib.sha1(archive.read_bytes()).hexdigest(),
                            member="lyrics.txt")
  monkeypatch.setitem(corpora.KNOWN_CORPORA, "lyrics", spec)
  text = corpora.read_text("lyrics", str(tmp_path))
  corpus = corpora.preprocess(text, "d2l_zh1")
  assert corpus.vocab.decode(corpus.train_ids) == "想要有直升机 想要和你飞"


@pytest.mark.parametrize("corpus, edition, vocab_size, first", [
    ("timemachine", "d2l_2019", 43, "the time machine, by h. g. wells [1898] "),
    ("timemachine", "d2l_0x", 28, "the time machine by h g wellsithe time"),
    ("timemachine", "d2l_1x", 28, "the time machine by h g wells i the time"),
    ("jaychou", "d2l_zh1", 1027, "想要有直升机 想要和你飞到宇宙去"),
])
def test_real_corpora_match_the_book(real_data_dir, corpus, edition, vocab_size, first):
  data = corpora.preprocess(corpora.read_text(corpus, real_data_dir), edition)
  assert len(data.vocab) == vocab_size
  assert data.vocab.decode(data.train_ids[:len(first)]) == first
  if edition == "d2l_0x":
    assert data.vocab.tokens[:5] == ("<unk>", " ", "e", "t", "a")
  if edition == "d2l_1x":
    assert len(data.train_ids) == 173428
  else:
    assert len(data.train_ids) == 10000


def test_tiny_shakespeare_by_name_with_the_char_rnn_split(real_data_dir):
  """Karpathy's corpus by name (SHA-1 checked): 1,115,394 characters, 65 symbols, the last 10% held out."""
  text = corpora.read_text("tinyshakespeare", real_data_dir)
  assert len(text) == 1115394 and text.startswith("First Citizen:\n")
  data = corpora.preprocess(text, "raw", max_tokens=0, val_fraction=0.1)
  assert len(data.vocab) == 65 + 1 and "<unk>" in data.vocab.tokens  # the raw edition's vocabulary keeps <unk>
  assert len(data.train_ids) + len(data.val_ids) == 1115394
  assert len(data.val_ids) == pytest.approx(111539, abs=1)
