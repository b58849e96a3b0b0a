"""Population throughput: K members trained as one vmapped program against the same K runs one after another.

    python -m lstm_jax.commands.benchmark_population --population_sizes=4,16 --steps=20

Reports member-steps per second (medians over alternating rounds; the ratio's min-max beside it) (one member-step = one minibatch of one member) after compilation, for the
population step and for the single-run step run K times as many steps, and the ratio; compile times beside.
The single-run step is compiled once here; a real sequential sweep compiles it once per run, which the last
column counts (K single compiles against one population compile, plus the timed steps).
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import numpy as np

from lstm_jax import config as config_lib
from lstm_jax.models import factory as models
from lstm_jax.sweeps import population as population_lib
from lstm_jax.train import loop as train_lib
from lstm_jax.train import optimizer as optimizer_lib
from lstm_jax.train import state as train_state_lib

@dataclasses.dataclass(frozen=True)
class Shape:
  """The members' shared shape: hidden units H, batch B, time steps T, vocabulary V and cell family."""
  hidden_size: int = 256
  batch_size: int = 32
  num_steps: int = 35
  vocab_size: int = 28   # the Time Machine, d2l 0.x
  cell: str = "lstm"


def _configs(size: int, shape: Shape):
  configs = []
  for k in range(size):
    c = config_lib.default_config()
    c.data.batch_size, c.data.num_steps = shape.batch_size, shape.num_steps
    c.model.hidden_size, c.model.cell = shape.hidden_size, shape.cell
    c.optimizer.learning_rate = 10.0 * 2.0 ** (k % 6)
    c.seed = k
    configs.append(c)
  return configs


def _block(tree):
  return jax.block_until_ready(tree)


def measure(size: int, steps: int, rounds: int, shape: Shape = Shape()) -> dict[str, float]:
  """Compiles both programs, then alternates them for ``rounds`` rounds; rates are medians over rounds."""
  configs = _configs(size, shape)
  rng = np.random.default_rng(0)
  tokens_KBT = rng.integers(0, shape.vocab_size, (2, size, shape.batch_size, shape.num_steps)).astype(np.int32)
  active = np.ones(size, bool)

  population = population_lib.Population(configs, shape.vocab_size)
  states = [population.init()]
  start = time.perf_counter()
  states[0], _ = _block(population.step(states[0], tokens_KBT[0], tokens_KBT[1], active))
  population_compile = time.perf_counter() - start

  base = configs[0]
  model = models.from_config(base.model, shape.vocab_size)
  optimizer = optimizer_lib.make_optimizer(base.optimizer)
  step_fn = train_lib.compile_train_step(model, optimizer, carry_state=True)
  state = [train_state_lib.create_train_state(model, optimizer, base.seed, shape.batch_size)]
  start = time.perf_counter()
  state[0], _ = _block(step_fn(state[0], tokens_KBT[0, 0], tokens_KBT[1, 0]))
  single_compile = time.perf_counter() - start

  def population_round():
    for _ in range(steps):
      states[0], metrics = population.step(states[0], tokens_KBT[0], tokens_KBT[1], active)
    _block(metrics)

  def sequential_round():
    for _ in range(size):  # the K runs one after another
      for _ in range(steps):
        state[0], metrics = step_fn(state[0], tokens_KBT[0, 0], tokens_KBT[1, 0])
    _block(metrics)

  population_rates, sequential_rates = [], []
  for _ in range(rounds):
    for timed, rates in ((population_round, population_rates), (sequential_round, sequential_rates)):
      start = time.perf_counter()
      timed()
      rates.append(size * steps / (time.perf_counter() - start))
  population_rate, sequential_rate = statistics.median(population_rates), statistics.median(sequential_rates)
  ratios = [a / b for a, b in zip(population_rates, sequential_rates)]
  population_total = population_compile + size * steps / population_rate
  sequential_total = size * single_compile + size * steps / sequential_rate  # each run compiles its own step
  return {"population_size": size, "population_member_steps_per_sec": population_rate,
          "sequential_member_steps_per_sec": sequential_rate, "ratio": statistics.median(ratios),
          "ratio_min": min(ratios), "ratio_max": max(ratios),
          "population_compile_sec": population_compile, "single_compile_sec": single_compile,
          "ratio_with_compile": sequential_total / population_total, "devices": jax.device_count(),
          "backend": jax.default_backend()}


def markdown_row(r: dict[str, float]) -> str:
  return (f"| {r['population_size']} | {r['population_member_steps_per_sec']:.1f} | "
          f"{r['sequential_member_steps_per_sec']:.1f} | "
          f"{r['ratio']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) | "
          f"{r['population_compile_sec']:.1f} / {r['single_compile_sec']:.1f} | {r['ratio_with_compile']:.2f} |")


MARKDOWN_HEADER = ("| K | population member-steps/s | one-after-another member-steps/s | ratio | compile: population / "
                   "single (s) | ratio counting one compile per run |\n|---|---|---|---|---|---|")
