"""Timing the benchmark's runners and writing its table.

Method: every implementation is compiled and warmed up first (compile time reported on its own), then all of
them run in interleaved rounds, each timing enough calls for ~0.5 s (0.2 s with ``--quick``). The table gives the
median and min-max over rounds; "x PyTorch" is the median over rounds of the per-round speed ratio (> 1: faster
than PyTorch; for W3 the latency ratio PyTorch one-call / ours); "x cuDNN" the same against the cuDNN row. "% peak" is model FLOP/s (3x the forward's
matmul FLOPs; the one-hot input projection is a gather and counts 0) over the fp32 matmul rate this command
measures (best of several 2048^3 XLA matmuls). The machine may be shared: read ratios, not absolute numbers;
rows whose rounds spread by more than 25% are marked "(noisy)" and listed in a warning. PyTorch's
OpenMP threads slow down sharply when another process takes a core, so rerun on a quiet machine.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax.benchmarks.workloads import Runner, Workload, block


def _timed_call(runner: Runner) -> float:
  start = time.perf_counter()
  block(runner.call())
  return time.perf_counter() - start


def matmul_peak_flops(size: int = 2048, repeats: int = 5) -> float:
  """The best fp32 FLOP/s of an XLA ``[size, size] x [size, size]`` matmul on this machine."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, a).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2.0 * size ** 3 / min(times)



def measure(runners: list[Runner], rounds: int, seconds_per_call_batch: float) -> None:
  """Compiles and warms up every runner, then times them in interleaved rounds (rotating the order)."""
  for runner in runners:
    runner.compile_s = _timed_call(runner)      # first call: tracing + compilation (+ one step)
    one = min(_timed_call(runner) for _ in range(2))
    runner.iterations = max(1, round(seconds_per_call_batch / max(one, 1e-6)))
  for r in range(rounds):
    for runner in runners[r % len(runners):] + runners[:r % len(runners)]:
      start = time.perf_counter()
      result = None
      for _ in range(runner.iterations):
        result = runner.call()
      block(result)
      runner.rates.append(runner.units_per_call * runner.iterations / (time.perf_counter() - start))


@dataclasses.dataclass
class Row:
  workload: str
  implementation: str
  median: float        # tokens/s (W3: microseconds per token)
  low: float
  high: float
  ratio: float         # speed relative to the PyTorch row (> 1: faster)
  peak_fraction: float
  compile_s: float
  ratio_cudnn: float = float("nan")  # speed relative to the cuDNN (jax.experimental.rnn) row
  estimate: str = ""   # estimated tokens/s and bound (lstm_jax.estimates), GPU/TPU scratch rows


def _median_ratio(runner: Runner, reference: Runner | None) -> float:
  """The median over rounds of ``runner``'s rate over ``reference``'s in the same round (nan: no reference)."""
  if reference is None:
    return float("nan")
  return statistics.median(a / b for a, b in zip(runner.rates, reference.rates))


def summarise(workload: Workload, runners: list[Runner], peak: float) -> list[Row]:
  torch_row = next((r for r in runners if r.reference == "torch"), None)
  cudnn_row = next((r for r in runners if r.reference == "cudnn"), None)
  rows = []
  for runner in runners:
    median = statistics.median(runner.rates)
    ratio, ratio_cudnn = _median_ratio(runner, torch_row), _median_ratio(runner, cudnn_row)
    if workload.name == "W3":
      values = [1e6 / rate for rate in runner.rates]
      rows.append(Row(workload.name, runner.name, statistics.median(values), min(values), max(values),
                      ratio, float("nan"), runner.compile_s, ratio_cudnn))
    else:
      rows.append(Row(workload.name, runner.name, median, min(runner.rates), max(runner.rates), ratio,
                      median * workload.train_flops_per_token() / peak, runner.compile_s, ratio_cudnn,
                      runner.estimate))
  return rows


def markdown_table(rows: list[Row], peak: float) -> str:
  device = jax.devices()[0]
  lines = [f"fp32 matmul rate measured here: {peak / 1e9:.0f} GFLOP/s; JAX {jax.__version__}, {device.platform} "
           f"{device.device_kind}, {os.cpu_count()} cores visible.", "",
           "| workload | implementation | tokens/s (W3: us/token) median | min-max | x PyTorch | x cuDNN (jax) "
           "| % peak | compile s | estimated tokens/s (bound) |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for row in rows:
    unit = "{:.1f}" if row.workload == "W3" else "{:,.0f}"
    peak_text = "" if np.isnan(row.peak_fraction) else f"{100 * row.peak_fraction:.0f}%"
    noisy = " (noisy)" if is_noisy(row) else ""
    ratio_text, cudnn_text = ("" if np.isnan(r) else f"{r:.2f}{noisy}" for r in (row.ratio, row.ratio_cudnn))
    lines.append(f"| {row.workload} | {row.implementation} | {unit.format(row.median)} | "
                 f"{unit.format(row.low)}-{unit.format(row.high)} | {ratio_text} | {cudnn_text} | {peak_text} | "
                 f"{row.compile_s:.1f} | {row.estimate} |")
  return "\n".join(lines)


NOISY_SPREAD = 0.25  # (max - min) / median over rounds above which a row is flagged


def is_noisy(row: Row) -> bool:
  return (row.high - row.low) / row.median > NOISY_SPREAD


def noisy_lines(rows: list[Row]) -> list[str]:
  """A warning naming the rows whose rounds spread too much for their ratios to be trusted (none: empty)."""
  noisy = sorted({f"{r.workload} {r.implementation}" for r in rows if is_noisy(r)})
  if not noisy:
    return []
  return [f"- WARNING: spread over rounds above {NOISY_SPREAD:.0%} (machine busy?) for: {'; '.join(noisy)}. "
          f"Ratios involving these rows are unreliable; rerun when the machine is quiet."]
