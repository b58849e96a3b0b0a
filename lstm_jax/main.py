"""Entry point: ``python -m lstm_jax.main --config experiments/timemachine_lstm.py --workdir runs/tm``.

Set ``LSTM_JAX_DISTRIBUTED=1`` on every process of a multi-host job (``lstm_jax.train.multihost``).
Any config field can be overridden with ``--config.section.field=value``; unknown fields are an error.
"""

import signal
import sys

_STOP_SIGNALS: list[str] = []  # SIGINT / SIGTERM received before the training's own handlers are in place


def _record_stop(signum, frame):
  del frame
  _STOP_SIGNALS.append(signal.Signals(signum).name)


def _install_stop_handlers() -> None:
  """From here on a stop request is a flag the training reads (it exits with one line, or saves)."""
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, _record_stop)


if __name__ == "__main__":  # python -m lstm_jax.main: before the imports below, so Ctrl-C at any moment is one line
  _install_stop_handlers()

import os  # noqa: E402

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from lstm_jax.commands import common  # noqa: E402

FLAGS = flags.FLAGS
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics, config.json and checkpoints.")
config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/*.py[:variant]).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  import jax  # noqa: PLC0415  after flag parsing, so --help is fast and Ctrl-C meets the stop handler early
  from lstm_jax.data import corpora
  from lstm_jax.train import checkpoint
  from lstm_jax.train import loop as train
  from lstm_jax.train import multihost
  from lstm_jax.train import validation
  try:
    multihost.initialize_if_asked(os.environ)
  except ValueError as e:
    sys.exit(f"error: {e}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  checkpoint.quiet_background_errors()
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(), jax.devices())
  try:
    summary = train.train_and_evaluate(FLAGS.config, _WORKDIR.value, stop=train.StopRequest(_STOP_SIGNALS))
  except validation.ConfigError as e:
    common.exit_with(2, f"error: {e}")
  except (train.NonFiniteLossError, checkpoint.CheckpointError, corpora.CorpusError, OSError, ValueError) as e:
    common.exit_with(1, f"error: {e}")
  if jax.process_index() != 0 or "train_perplexity" not in summary:  # a multi-host job reports through process 0
    return
  print(f"final training perplexity {summary['train_perplexity']:.4f}"
        + (f", validation perplexity {summary['val_perplexity']:.4f}" if "val_perplexity" in summary else "")
        + f", wall time {summary['wall_time_sec']:.1f} s", flush=True)


def run():
  _install_stop_handlers()
  app.run(main, flags_parser=common.parse_flags)


if __name__ == "__main__":
  run()
