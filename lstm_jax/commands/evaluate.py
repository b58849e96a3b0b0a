"""Evaluate a checkpoint: ``python -m lstm_jax.commands.evaluate --workdir runs/x [--step N | --step best]
[--split train|val | --text_file FILE]``. Prints perplexity, its standard error (of the mean NLL) and bits per token.

The vocabulary and config come from the checkpoint; only the split's text is read (the corpus for train/val).
"""

from absl import app, flags, logging

from lstm_jax import checkpoint as checkpoint_lib
from lstm_jax import evaluate as evaluate_lib
from lstm_jax.data import corpora

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir holding checkpoints/.", required=True)
_STEP = flags.DEFINE_string("step", None, "Checkpoint step, 'best', or empty for the latest.")
_SPLIT = flags.DEFINE_enum("split", "val", ["train", "val"], "Corpus split (ignored with --text_file).")
_TEXT_FILE = flags.DEFINE_string("text_file", None, "Evaluate on this UTF-8 text file instead of a split.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Rows evaluated in parallel (default: the config's).")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  model, params, vocab, config = checkpoint_lib.load_params(_WORKDIR.value, _STEP.value)
  if _TEXT_FILE.value:
    text = corpora.read_text(_TEXT_FILE.value)
    tokens = list(text) if vocab.separator == "" else text.split()
    ids, source = vocab.encode(tokens), _TEXT_FILE.value
  else:
    corpus = corpora.load(config.data)
    ids, source = (corpus.train_ids if _SPLIT.value == "train" else corpus.val_ids), f"{_SPLIT.value} split"
  result = evaluate_lib.evaluate_ids(model, params, ids, _BATCH_SIZE.value or config.data.batch_size,
                                      config.data.num_steps)
  print(f"{source}: perplexity {result.perplexity:.4f} (NLL {result.mean_nll:.4f} +- {result.stderr_nll:.4f} nats), "
        f"{result.bits_per_token:.4f} bits per token, {result.num_tokens} tokens")


if __name__ == "__main__":
  app.run(main)
