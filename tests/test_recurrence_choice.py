"""Which recurrence ``model.recurrence`` selects: on a GPU/TPU auto takes the candidate with the lowest estimated
train step at the traced shape (``lstm_jax.estimates``), on a CPU the hand-written backward; asking for a
recurrence a cell lacks is a clear error."""

import jax
import pytest

from lstm_jax.models import scratch as model_lib


def _model(**kwargs):
  kwargs.setdefault("hidden_size", 4)
  return model_lib.LanguageModel(vocab_size=5, **kwargs)


@pytest.mark.parametrize("backend,cell,expected", [
    ("cpu", "lstm", "fused_vjp"), ("cpu", "rnn", "fused_vjp"), ("cpu", "gru", "scan"), ("tpu", "gru", "scan"),
    ("cpu", "gru_reset_after", "scan")])
def test_auto_on_a_cpu_or_without_candidates(monkeypatch, backend, cell, expected):
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  assert _model(cell=cell).resolved_recurrence == expected
  assert _model(cell=cell).recurrence_line(32, 35) is None  # nothing was chosen by estimate


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
@pytest.mark.parametrize("cell", ["lstm", "rnn", "gru_reset_after"])
@pytest.mark.parametrize("hidden, batch, steps", [(64, 16, 35), (256, 32, 35), (512, 64, 100), (1024, 128, 100)])
def test_auto_takes_the_lowest_estimate_at_the_shape(monkeypatch, backend, cell, hidden, batch, steps):
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  model = model_lib.LanguageModel(vocab_size=28, hidden_size=hidden, cell=cell)
  found = model.estimates(batch, steps)
  assert set(found) == set(model.candidates()) and "pallas" in found
  chosen = model.recurrence_for(batch, steps)
  assert found[chosen].step_seconds == min(e.step_seconds for e in found.values())
  line = model.recurrence_line(batch, steps)
  assert f"takes {chosen}" in line and "estimates, not measurements" in line and "\n" not in line
  assert ("h100" if backend == "gpu" else "v5e") in line and "assumed" in line  # no such device here


def test_on_an_h100_the_lstm_takes_the_persistent_kernel_and_the_batch_blocked_kernels_only_small_sizes(
    monkeypatch):
  """The LSTM's persistent kernel (``W_h`` split over the SMs) wins at the workloads' sizes; the tanh RNN's and
  GRU's batch-blocked kernels re-read all of ``W_h`` per program per step, so they win only where it is small."""
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  for hidden, batch, steps in ((256, 32, 35), (512, 64, 100), (1024, 128, 100)):
    assert _model(hidden_size=hidden).recurrence_for(batch, steps) == "pallas"
  assert _model(hidden_size=1024).recurrence_for(256, 35) == "fused_vjp"  # batch over 128: batch-blocked kernel
  assert _model(cell="rnn", hidden_size=64).recurrence_for(32, 35) == "pallas"
  assert _model(cell="gru_reset_after", hidden_size=1024).recurrence_for(128, 100) == "scan"  # no fused_vjp


def test_apply_resolves_auto_at_the_shape_it_is_traced_with(monkeypatch):
  seen = []

  def recurrence_for(self, batch, steps):
    seen.append((batch, steps))
    return "scan"

  monkeypatch.setattr(model_lib.LanguageModel, "recurrence_for", recurrence_for)
  model = model_lib.LanguageModel(vocab_size=5, hidden_size=4)
  model.apply(model.init(jax.random.key(0)), jax.numpy.zeros((3, 7), jax.numpy.int32))
  assert seen == [(3, 7)]


def test_explicit_recurrences_are_kept_and_missing_ones_refused():
  assert _model(recurrence="pallas").resolved_recurrence == "pallas"
  assert _model(recurrence="scan").resolved_recurrence == "scan"
  with pytest.raises(ValueError, match="recurrence='pallas' exists only for cells"):
    _model(cell="gru", recurrence="pallas").recurrence_fn
  with pytest.raises(ValueError, match="recurrence='fused_vjp' exists only for cells"):
    _model(cell="gru", recurrence="fused_vjp").recurrence_fn
  with pytest.raises(ValueError, match="Unknown recurrence"):
    _model(recurrence="cuda").recurrence_fn
