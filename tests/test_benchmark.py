"""The benchmark command's pieces on tiny shapes: every runner trains/generates, rounds are recorded, the table and
targets are derived from them."""

import numpy as np
import pytest

from lstm_jax.benchmarks import profile
from lstm_jax.benchmarks import train_step as benchmark


def test_flops_per_token_counts_recurrent_input_and_head_matmuls():
  one_layer = benchmark.Workload("W1", "", num_layers=1, hidden=4, batch=1, steps=1)
  two_layers = benchmark.Workload("W2", "", num_layers=2, hidden=4, batch=1, steps=1)
  head = 2 * 4 * benchmark.VOCAB
  assert one_layer.train_flops_per_token() == 3 * (2 * 4 * 16 + head)
  assert two_layers.train_flops_per_token() == 3 * (2 * 4 * 16 + 2 * (2 * 4 * 16) + head)


@pytest.mark.slow
def test_tiny_train_and_generation_workloads_produce_a_table():
  train = benchmark.Workload("W1", "tiny", num_layers=2, hidden=8, batch=2, steps=3)
  generation = benchmark.Workload("W3", "tiny", num_layers=1, hidden=8, batch=1, steps=5)
  rows = []
  for workload in (train, generation):
    runners = benchmark.build_runners(workload)
    assert len(runners) >= (4 if workload is train else 2)
    benchmark.measure(runners, rounds=2, seconds_per_call_batch=0.01)
    assert all(len(r.rates) == 2 and min(r.rates) > 0 for r in runners)
    rows += benchmark.summarise(workload, runners, peak=1e11)
  table = benchmark.markdown_table(rows, peak=1e11)
  assert table.count("\n| W1 |") == len([r for r in rows if r.workload == "W1"])
  reference_rows = [r for r in rows if "teacher-forced" in r.implementation or r.implementation == "pytorch nn.LSTM"]
  for row in reference_rows:
    np.testing.assert_allclose(row.ratio, 1.0)
  fused = next(r for r in rows if r.implementation == "scratch, recurrence=fused_vjp")
  assert 0 < fused.peak_fraction < 1


def test_noisy_rows_are_flagged_in_table_and_warning():
  quiet = benchmark.Row("W1", "pytorch nn.LSTM", 100.0, 95.0, 105.0, 1.0, 0.5, 0.1)
  noisy = benchmark.Row("W1", "scratch, recurrence=fused_vjp", 100.0, 40.0, 110.0, 1.2, 0.5, 0.1)
  assert not benchmark.is_noisy(quiet) and benchmark.is_noisy(noisy)
  assert "1.20 (noisy)" in benchmark.markdown_table([quiet, noisy], peak=1e11)
  assert benchmark.noisy_lines([quiet]) == []
  warning = benchmark.noisy_lines([quiet, noisy])
  assert len(warning) == 1 and "WARNING" in warning[0] and "fused_vjp" in warning[0] and "nn.LSTM" not in warning[0]


def test_forward_only_timing_covers_ours_flax_and_pytorch_when_installed():
  tiny = benchmark.Workload("W1", "tiny", num_layers=1, hidden=8, batch=2, steps=3)
  seconds = profile.forward_seconds(tiny, rounds=1, calls=1)
  assert seconds["scratch"] > 0 and seconds["flax LSTMCell (nn.RNN)"] > 0
  assert ("pytorch" in seconds) == (benchmark.torch_module() is not None)


def test_ratios_divide_by_the_pytorch_and_the_cudnn_rows_round_by_round():
  workload = benchmark.WORKLOADS["tiny"]
  runners = [benchmark.Runner("ours", lambda: None, 1, rates=[300.0, 200.0, 500.0]),
             benchmark.Runner("cudnn", lambda: None, 1, reference="cudnn", rates=[100.0, 100.0, 250.0]),
             benchmark.Runner("torch", lambda: None, 1, reference="torch", rates=[150.0, 50.0, 100.0])]
  ours, cudnn, torch = benchmark.summarise(workload, runners, peak=1e11)
  assert ours.ratio_cudnn == 2.0 and ours.ratio == 4.0  # medians of (3, 2, 2) and (2, 4, 5)
  assert cudnn.ratio_cudnn == 1.0 and torch.ratio == 1.0
  table = benchmark.markdown_table([ours, cudnn, torch], peak=1e11)
  assert "| x PyTorch | x cuDNN (jax) |" in table and "| tiny | ours | 300 | 200-500 | 4.00 (noisy) | 2.00 (noisy) |" in table


def test_implementations_are_chosen_by_name_and_unknown_names_are_refused(monkeypatch):
  from lstm_jax.interop import cudnn
  from lstm_jax.models import cudnn as cudnn_model

  tiny = benchmark.WORKLOADS["tiny"]
  assert benchmark.cudnn_train_runner(tiny) is None or cudnn.cudnn_available()  # no row where cuDNN cannot run
  monkeypatch.setattr(cudnn_model, "cudnn_layers", cudnn.reference_layers)  # cuDNN's pure-JAX reference on CPU
  runners = benchmark.build_runners(tiny, ("pallas_bf16", "cudnn"))
  assert [r.name for r in runners] == ["scratch, recurrence=pallas (bfloat16)", "cuDNN LSTM (jax.experimental.rnn)"]
  assert runners[1].reference == "cudnn"
  assert all(np.isfinite(float(r.call())) for r in runners)
  with pytest.raises(ValueError, match="Unknown implementations"):
    benchmark.build_runners(tiny, ("pallas", "cuda_magic"))
  for backend, names in benchmark.DEFAULT_IMPLEMENTATIONS.items():
    assert set(names) <= set(benchmark.IMPLEMENTATIONS), backend
