"""Shared fixtures: small texts the tests make themselves, and the real corpora when a data directory is set."""

import os
import pathlib

import pytest

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def tiny_text() -> str:
  line = "The quick brown fox jumps over the lazy dog; 1898 -- 'twas brillig!\n"
  return line * 40


@pytest.fixture(scope="session")
def real_data_dir() -> str:
  """The directory holding the real corpora (LSTM_JAX_DATA_DIR, else ../shared/data); skips when absent."""
  directory = os.environ.get("LSTM_JAX_DATA_DIR") or (str(SHARED_DATA) if SHARED_DATA.is_dir() else "")
  if not directory or not (pathlib.Path(directory) / "timemachine.txt").is_file():
    pytest.skip("real corpora not available: set LSTM_JAX_DATA_DIR")
  return directory
