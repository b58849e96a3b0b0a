"""Compile a config for chips this machine does not have: ``python -m lstm_jax.commands.compile --config
experiments/timemachine_lstm.py[:variant] [--config.x=y ...] --target h100 --target v5e:1x1 [--population K]``.

One line per target: compile seconds and per-device memory (arguments, outputs, temporaries, total against the
chip's memory) of the train step and the evaluation forward (and the population step of K members), the
recurrence used and the kernels found; then, indented, the estimated train step of every candidate recurrence
(pallas, fused_vjp, scan) on that chip with the bound that dominates it, and the one ``recurrence=auto`` takes
(``lstm_jax.aot.estimate``; ``--noestimate`` skips the extra compiles). Exit 0: every target compiles and fits; 1: one does not (the compiler's
message, shortened), or the compiler packages are missing (``pip install -e '.[aot]'``); 2: a bad flag or config,
or an unknown target. Proves the chip's compiler accepts the program and it fits; its speed is an estimate from
the compilers' dumps and the chips' figures (``lstm_jax.estimates``), not a measurement.
Targets and method: ``lstm_jax.aot``.
"""

import atexit
import os
import shutil
import sys
import tempfile

os.environ["JAX_PLATFORMS"] = "cpu"  # before jax starts: the CUDA plugin would try the absent driver
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # XLA's C++ log lines (errors come back as exceptions)
if "--noestimate" not in sys.argv and "--estimate=false" not in sys.argv:
  # The compilers read their dump flags once, when JAX starts its backends: set them before (the estimates read
  # the dumps; lstm_jax.estimates.evidence).
  from lstm_jax.estimates import evidence as _evidence  # noqa: E402 (imports no jax backend)
  _DUMPS = tempfile.mkdtemp(prefix="lstm_jax_dumps_")
  atexit.register(shutil.rmtree, _DUMPS, ignore_errors=True)
  for _name, _value in _evidence.dump_environment(_DUMPS).items():
    _flags = _name in ("XLA_FLAGS", "LIBTPU_INIT_ARGS")  # flag lists: appended to the user's
    os.environ[_name] = f"{os.environ.get(_name, '')} {_value}".strip() if _flags else _value

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from lstm_jax.commands import common  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/*.py[:variant]).",
                                lock_config=True)
_TARGETS = flags.DEFINE_multi_string("target", [], "Chip to compile for (repeatable): h100, h200, a100, h100x8, or a "
                                     "TPU topology such as v5e:1x1, v6e:1x1, v5p:1x1x1, v5e:2x2, v4:2x2x1.")
_POPULATION = flags.DEFINE_integer("population", 0, "Also compile the population step of this many members.",
                                   lower_bound=0)
_ESTIMATE = flags.DEFINE_boolean("estimate", True, "Also compile each candidate recurrence's train step and print "
                                 "its estimated time on each target.")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}; pass flags as --target NAME.", file=sys.stderr)
    sys.exit(2)
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)
  from lstm_jax.aot import check  # noqa: PLC0415  after flag parsing: a bad flag is answered fast
  errors = lambda line: print(line, file=sys.stderr if line.startswith("error:") else sys.stdout, flush=True)
  sys.exit(check.run(FLAGS.config, _TARGETS.value, _POPULATION.value, print_fn=errors, estimate=_ESTIMATE.value))


def run():
  app.run(main, flags_parser=common.parse_flags)


if __name__ == "__main__":
  run()
