"""Evaluate a checkpoint: ``python -m lstm_jax.commands.evaluate --workdir runs/x [--step N | --step best]
[--split train|val | --text_file FILE]``. Prints perplexity, its standard error (of the mean NLL) and bits per token.

The vocabulary and config come from the checkpoint; the split's text is read (the corpus) or the file, through the
run's edition preprocessing. Without ``--split``: the validation split where the run has one, else training.
Exit status 2 for a bad flag, 1 for a missing or unreadable run; nothing is written.
"""

from absl import app, flags, logging

from lstm_jax.commands import common
from lstm_jax.commands import inputs as run_inputs
from lstm_jax.train import checkpoint as checkpoint_lib
from lstm_jax.train import evaluate as evaluate_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir holding checkpoints/.", required=True)
_STEP = flags.DEFINE_string("step", None, "Checkpoint step, 'best', or empty for the latest.")
_SPLIT = flags.DEFINE_enum("split", None, ["train", "val"], "Corpus split (default: val if the run has one).")
_TEXT_FILE = flags.DEFINE_string("text_file", None, "Evaluate on this UTF-8 text file instead of a split.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Rows evaluated in parallel (default: the config's).",
                                   lower_bound=1)


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)
  checkpoint_lib.quiet_background_errors()
  with run_inputs.one_line_errors():
    model, params, vocab, config = checkpoint_lib.load_params(_WORKDIR.value, run_inputs.parse_step(_STEP.value))
    if _TEXT_FILE.value:
      ids, source = run_inputs.text_ids(_TEXT_FILE.value, vocab, config), _TEXT_FILE.value
    else:
      ids, source = run_inputs.split_ids(config, _SPLIT.value, _WORKDIR.value)
    if isinstance(ids, list):  # windows sampling: the run's own validation windows
      result = evaluate_lib.evaluate_batches(model, params, ids, carry_state=False)
    else:
      result = evaluate_lib.evaluate_ids(model, params, ids, _BATCH_SIZE.value or config.data.batch_size,
                                         config.data.num_steps)
  print(f"{source}: perplexity {result.perplexity:.4f} (NLL {result.mean_nll:.4f} +- {result.stderr_nll:.4f} nats), "
        f"{result.bits_per_token:.4f} bits per {'character' if vocab.separator == '' else 'token'}, "
        f"{result.num_tokens} tokens")


def run():
  app.run(main, flags_parser=common.parse_flags)


if __name__ == "__main__":
  run()
