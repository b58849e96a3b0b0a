"""Entry point: ``python -m lstm_jax.main --config experiments/timemachine_lstm.py --workdir runs/tm``.

Set ``LSTM_JAX_DISTRIBUTED=1`` on every host of a multi-host job to call ``jax.distributed.initialize()``.
Any config field can be overridden with ``--config.section.field=value``; unknown fields are an error.
"""

import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics, config.json and checkpoints.")
config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/*.py[:variant]).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if os.environ.get("LSTM_JAX_DISTRIBUTED") == "1":  # multi-host (TPU VM workers, SLURM): join one JAX job
    jax.distributed.initialize()
  from lstm_jax import train  # after flag parsing, so --help is fast
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(), jax.devices())
  from lstm_jax import checkpoint
  from lstm_jax.data import corpora
  try:
    summary = train.train_and_evaluate(FLAGS.config, _WORKDIR.value)
  except (train.NonFiniteLossError, checkpoint.CheckpointError, corpora.CorpusError, OSError, ValueError) as e:
    sys.exit(f"error: {e}")
  print(f"final training perplexity {summary['train_perplexity']:.4f}"
        + (f", validation perplexity {summary['val_perplexity']:.4f}" if "val_perplexity" in summary else "")
        + f", wall time {summary['wall_time_sec']:.1f} s", flush=True)


def parse_flags(argv):
  """absl's parser, with a wrong ``--config.x=y`` reported as one clear line instead of a traceback."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"{e}\nPass --helpfull to list the flags.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    message = str(e).strip("'\"").replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
    sys.exit(f"Bad config override: {message}. Config fields are listed with one-line comments in "
             f"lstm_jax/config.py; override them as --config.section.field=value.")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
