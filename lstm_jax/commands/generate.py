"""Generate from a checkpoint: ``python -m lstm_jax.commands.generate --workdir runs/x --prefix "time traveller"
--num_tokens 50 [--method greedy|sample --temperature 0.8 --top_k 5 --seed 0] [--step N|best]``.

Prefixes go through the run's edition preprocessing (the 2019 book lowercases). Runs on whatever device this host
has, whichever device setup wrote the checkpoint. Exit status 2 for a bad flag, 1 for a missing or unreadable run.
"""

from absl import app, flags, logging

from lstm_jax.commands import common
from lstm_jax.commands import inputs as run_inputs
from lstm_jax.train import checkpoint as checkpoint_lib
from lstm_jax.train import generate

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir holding checkpoints/.", required=True)
_STEP = flags.DEFINE_string("step", None, "Checkpoint step, 'best', or empty for the latest.")
_PREFIX = flags.DEFINE_multi_string("prefix", ["time traveller"], "Prefix(es) to continue.")
_NUM_TOKENS = flags.DEFINE_integer("num_tokens", 50, "Tokens to generate after each prefix.")
_METHOD = flags.DEFINE_enum("method", "greedy", list(generate.METHODS), "Decoding method.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Softmax temperature for --method=sample (> 0).")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens (0: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)
  checkpoint_lib.quiet_background_errors()
  with run_inputs.one_line_errors():
    model, params, vocab, config = checkpoint_lib.load_params(_WORKDIR.value, run_inputs.parse_step(_STEP.value))
    prefixes = run_inputs.check_decoding(vocab, _PREFIX.value, _NUM_TOKENS.value, _METHOD.value, _TEMPERATURE.value,
                                         _TOP_K.value, config.data.edition)
  for prefix in prefixes:
    print(generate.generate_text(model, params, vocab, prefix, _NUM_TOKENS.value, method=_METHOD.value,
                                 temperature=_TEMPERATURE.value, top_k=_TOP_K.value, seed=_SEED.value))


def run():
  app.run(main, flags_parser=common.parse_flags)


if __name__ == "__main__":
  run()
