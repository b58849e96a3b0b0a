"""Population throughput: K members trained as one vmapped program against the same K runs one after another.

    python -m lstm_jax.benchmark_population --population_sizes=4,16 --steps=20

Reports member-steps per second (medians over alternating rounds; the ratio's min-max beside it) (one member-step = one minibatch of one member) after compilation, for the
population step and for the single-run step run K times as many steps, and the ratio; compile times beside.
The single-run step is compiled once here; a real sequential sweep compiles it once per run, which the last
column counts (K single compiles against one population compile, plus the timed steps).
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import numpy as np
from absl import app, flags

from lstm_jax import config as config_lib
from lstm_jax import model as model_lib
from lstm_jax import population as population_lib
from lstm_jax import train as train_lib

_SIZES = flags.DEFINE_list("population_sizes", ["4", "16"], "Population sizes K to measure.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per member.")
_HIDDEN = flags.DEFINE_integer("hidden_size", 256, "Hidden units H.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Sequences per minibatch B.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 35, "Time steps per sequence T.")
_VOCAB = flags.DEFINE_integer("vocab_size", 28, "Vocabulary size V (28: the Time Machine, d2l 0.x).")
_CELL = flags.DEFINE_string("cell", "lstm", "Cell family.")
_ROUNDS = flags.DEFINE_integer("population_rounds", 5, "Alternating timing rounds; rates and the ratio are medians over them.")


def _configs(size: int):
  configs = []
  for k in range(size):
    c = config_lib.default_config()
    c.data.batch_size, c.data.num_steps = _BATCH.value, _NUM_STEPS.value
    c.model.hidden_size, c.model.cell = _HIDDEN.value, _CELL.value
    c.optimizer.learning_rate = 10.0 * 2.0 ** (k % 6)
    c.seed = k
    configs.append(c)
  return configs


def _block(tree):
  return jax.block_until_ready(tree)


def measure(size: int, steps: int, rounds: int) -> dict[str, float]:
  """Compiles both programs, then alternates them for ``rounds`` rounds; rates are medians over rounds."""
  configs = _configs(size)
  rng = np.random.default_rng(0)
  tokens_KBT = rng.integers(0, _VOCAB.value, (2, size, _BATCH.value, _NUM_STEPS.value)).astype(np.int32)
  active = np.ones(size, bool)

  population = population_lib.Population(configs, _VOCAB.value)
  states = [population.init()]
  start = time.perf_counter()
  states[0], _ = _block(population.step(states[0], tokens_KBT[0], tokens_KBT[1], active))
  population_compile = time.perf_counter() - start

  base = configs[0]
  model = model_lib.from_config(base.model, _VOCAB.value)
  optimizer = train_lib.make_optimizer(base.optimizer)
  step_fn = train_lib.compile_train_step(model, optimizer, carry_state=True)
  state = [train_lib.create_train_state(model, optimizer, base.seed, _BATCH.value)]
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


def main(argv):
  del argv
  print(f"H={_HIDDEN.value} B={_BATCH.value} T={_NUM_STEPS.value} V={_VOCAB.value} cell={_CELL.value}, "
        f"{_STEPS.value} timed steps per member, {jax.device_count()} {jax.default_backend()} device(s)")
  print("| K | population member-steps/s | one-after-another member-steps/s | ratio | compile: population / single (s)"
        " | ratio counting one compile per run |")
  print("|---|---|---|---|---|---|")
  for size in (int(s) for s in _SIZES.value):
    r = measure(size, _STEPS.value, _ROUNDS.value)
    print(f"| {size} | {r['population_member_steps_per_sec']:.1f} | {r['sequential_member_steps_per_sec']:.1f} | "
          f"{r['ratio']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) | {r['population_compile_sec']:.1f} / {r['single_compile_sec']:.1f} | "
          f"{r['ratio_with_compile']:.2f} |", flush=True)
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
  app.run(main)
