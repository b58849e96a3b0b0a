"""Population throughput: ``python -m lstm_jax.commands.benchmark_population --population_sizes=4,16 --steps=20``
(K members as one vmapped program against K runs one after another; ``lstm_jax.benchmarks.population``)."""

import dataclasses
import json

from absl import app, flags

from lstm_jax.commands import common

_SIZES = flags.DEFINE_list("population_sizes", ["4", "16"], "Population sizes K to measure.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per member.")
_HIDDEN = flags.DEFINE_integer("hidden_size", 256, "Hidden units H.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Sequences per minibatch B.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 35, "Time steps per sequence T.")
_VOCAB = flags.DEFINE_integer("vocab_size", 28, "Vocabulary size V (28: the Time Machine, d2l 0.x).")
_CELL = flags.DEFINE_string("cell", "lstm", "Cell family.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating timing rounds; rates and the ratio are medians over them.")


def main(argv):
  del argv
  import jax  # noqa: PLC0415  after flag parsing: a bad flag is answered fast
  from lstm_jax.benchmarks import population  # noqa: PLC0415
  shape = population.Shape(_HIDDEN.value, _BATCH.value, _NUM_STEPS.value, _VOCAB.value, _CELL.value)
  print(f"{dataclasses.asdict(shape)}, {_STEPS.value} timed steps per member, {jax.device_count()} "
        f"{jax.default_backend()} device(s)")
  print(population.MARKDOWN_HEADER)
  for size in (int(s) for s in _SIZES.value):
    result = population.measure(size, _STEPS.value, _ROUNDS.value, shape)
    print(population.markdown_row(result), flush=True)
    print(json.dumps(result), flush=True)


def run():
  app.run(main, flags_parser=common.parse_flags)


if __name__ == "__main__":
  run()
