"""Training equivalence against independent references, and the held-out spread over seeds (issue 33).

``python -m lstm_jax.commands.equivalence --mode=trajectory [--steps=300] [--out_dir=reports/equivalence]``: the
project's training (per recurrence) against PyTorch (else the plain ``jax.grad`` reference) from the same weights
and minibatches, with two float32 references that differ only in summation order as the baseline; prints the
Markdown table and writes it and a plot of the divergence per step (``lstm_jax.equivalence.trajectory``).

``python -m lstm_jax.commands.equivalence --mode=spread --implementation=scan --seeds=0,1,2,3,4
--corpus=/path/tinyshakespeare.txt --results=reports/equivalence/spread_runs.jsonl``: trains the char-RNN recipe
once per seed (``implementation`` fused_vjp, scan or torch) and appends each run's training and held-out NLL;
``--mode=table`` prints the seed table of a results file (``lstm_jax.equivalence.spread``); ``--mode=rescore`` first
adds the held-out NLL with the state zeroed every window to project rows that lack it (from their workdirs).
"""

import pathlib

from absl import app, flags

from lstm_jax.commands import common

_MODE = flags.DEFINE_enum("mode", "trajectory", ["trajectory", "spread", "rescore", "table"], "What to run (see "
                          "the docstring).")
_OUT_DIR = flags.DEFINE_string("out_dir", "reports/equivalence", "trajectory: where the table (.md) and plot go.")
_STEPS = flags.DEFINE_integer("steps", 300, "trajectory: training steps compared.")
_CORPUS = flags.DEFINE_string("corpus", "timemachine", "The corpus (a name or a text file).")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 20000, "trajectory: training tokens (short epochs: several "
                                   "epoch boundaries in --steps).")
_HIDDEN = flags.DEFINE_integer("hidden_size", 64, "trajectory: LSTM units.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "trajectory: rows per minibatch.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 32, "trajectory: time steps per minibatch.")
_OPTIMIZERS = flags.DEFINE_list("optimizers", ["adam", "sgd"], "trajectory: adam (2e-3, clip 1) and/or sgd (the "
                                "book's: 100, clip 0.01).")
_RECURRENCES = flags.DEFINE_list("recurrences", ["fused_vjp", "scan", "pallas"], "trajectory: recurrences compared.")
_CARRY = flags.DEFINE_bool("carry_state", True, "trajectory: carry the state across minibatches (else zero it).")
_IMPLEMENTATION = flags.DEFINE_enum("implementation", "fused_vjp", ["fused_vjp", "scan", "torch"],
                                    "spread: the project with this recurrence, or PyTorch.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "spread: seeds, one run each.")
_RESULTS = flags.DEFINE_string("results", "reports/equivalence/spread_runs.jsonl", "spread/table: the JSON-lines "
                               "results file (appended to).")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/lstm_jax_spread", "spread: workdirs of the project's runs go under "
                               "this directory.")


def _spread() -> None:
  from lstm_jax.equivalence import spread  # noqa: PLC0415
  for seed in (int(s) for s in _SEEDS.value):
    if _IMPLEMENTATION.value == "torch":
      row = spread.torch_run(_CORPUS.value, seed)
    else:
      workdir = str(pathlib.Path(_WORKDIR.value) / f"{_IMPLEMENTATION.value}_seed{seed}")
      row = spread.project_run(_CORPUS.value, seed, _IMPLEMENTATION.value, workdir)
    spread.append(_RESULTS.value, row)
    print(f"{row['implementation']} seed {seed}: training NLL {row['train_nll']:.4f}, held-out NLL "
          f"{row['val_nll']:.4f}, {row['wall_s']:.0f} s", flush=True)


def main(argv):
  del argv
  if _MODE.value == "spread":
    _spread()
  elif _MODE.value in ("rescore", "table"):
    from lstm_jax.equivalence import spread  # noqa: PLC0415
    if _MODE.value == "rescore":
      spread.rescore(_RESULTS.value)
    print(spread.seed_table(spread.read(_RESULTS.value)))
  else:
    from lstm_jax.equivalence import trajectory  # noqa: PLC0415
    settings = trajectory.Settings(corpus=_CORPUS.value, max_tokens=_MAX_TOKENS.value, hidden_size=_HIDDEN.value,
                                   batch_size=_BATCH.value, num_steps=_NUM_STEPS.value, steps=_STEPS.value,
                                   carry_state=_CARRY.value)
    print(trajectory.report(settings, _OPTIMIZERS.value, _RECURRENCES.value, _OUT_DIR.value))


def run():
  app.run(main, flags_parser=common.parse_flags)


if __name__ == "__main__":
  run()
