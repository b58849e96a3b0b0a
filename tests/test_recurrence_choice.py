"""Which recurrence ``model.recurrence`` selects: auto picks the Pallas kernels on GPU/TPU and the hand-written
backward on CPU; asking for a recurrence a cell lacks is a clear error."""

import jax
import pytest

from lstm_jax import model as model_lib


def _model(**kwargs):
  return model_lib.LanguageModel(vocab_size=5, hidden_size=4, **kwargs)


@pytest.mark.parametrize("backend,cell,expected", [
    ("cpu", "lstm", "fused_vjp"), ("cpu", "rnn", "fused_vjp"), ("cpu", "gru", "scan"),
    ("gpu", "lstm", "pallas"), ("tpu", "lstm", "pallas"), ("gpu", "rnn", "pallas"), ("tpu", "gru", "scan"),
    ("tpu", "gru_reset_after", "pallas"), ("cpu", "gru_reset_after", "scan")])
def test_auto_follows_the_backend(monkeypatch, backend, cell, expected):
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  assert _model(cell=cell).resolved_recurrence == expected


def test_explicit_recurrences_are_kept_and_missing_ones_refused():
  assert _model(recurrence="pallas").resolved_recurrence == "pallas"
  assert _model(recurrence="scan").resolved_recurrence == "scan"
  with pytest.raises(ValueError, match="recurrence='pallas' exists only for cells"):
    _model(cell="gru", recurrence="pallas").recurrence_fn
  with pytest.raises(ValueError, match="recurrence='fused_vjp' exists only for cells"):
    _model(cell="gru", recurrence="fused_vjp").recurrence_fn
  with pytest.raises(ValueError, match="Unknown recurrence"):
    _model(recurrence="cuda").recurrence_fn
