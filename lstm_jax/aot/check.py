"""``lstm-jax-compile``'s work: a config's train step, evaluation forward and (optionally) population step compiled
for each target, one line per target, and the exit status (0: every target compiles and fits; 1: one does not, or
the compiler packages or the corpus are missing; 2: a bad config or an unknown target).

The model is the one ``lstm_jax.models.factory.from_config`` builds, placed on the target (``Target.placement``:
its platform, its devices) for the scratch implementation, so ``recurrence=auto`` resolves as on that chip (Pallas
for the LSTM, tanh RNN and reset-after GRU); the other implementations take no placement and compile as they are.
The vocabulary size comes from the config's corpus, loaded as the trainer loads it (``corpora.load``: a few MB at
most, read from ``LSTM_JAX_DATA_DIR`` or downloaded once).
"""

from __future__ import annotations

from typing import Sequence

import jax
import ml_collections

from lstm_jax.aot import compile as compile_lib
from lstm_jax.aot import targets as targets_lib
from lstm_jax.data import corpora
from lstm_jax.data import pipeline
from lstm_jax.models import factory as models
from lstm_jax.train import optimizer as optimizer_lib
from lstm_jax.train import validation

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def compile_target(config: ml_collections.ConfigDict, target: targets_lib.Target, vocab_size: int,
                   members: int = 0, estimate: bool = False) -> compile_lib.TargetResult:
  """The train step, evaluation forward and (``members > 0``) population step of ``config`` on ``target``; with
  ``estimate``, each candidate recurrence's estimated train step (``result.estimates``)."""
  result = compile_lib.TargetResult(target.name, target.chip, len(target.devices), recurrence="?",
                                    memory_bytes=target.memory_bytes)
  if config.model.get("implementation", "scratch") == "cudnn":
    result.recurrence = "cudnn"
    result.error = compile_lib.CUDNN_NOTE if target.platform == "cuda" else "cuDNN's RNN runs on NVIDIA GPUs only"
    return result
  try:
    model = models.from_config(config.model, vocab_size, placement=target.placement)
    d = config.data
    with jax.default_device(target.devices[0]):  # the kernels' envelope reads the chip (TPU: its VMEM)
      result.recurrence = compile_lib.recurrence_of(model, d.batch_size, d.num_steps)
      validation.check_model(model)  # recurrence=pallas outside the envelope: the line says why, nothing compiles
  except ValueError as e:
    result.error = str(e)
    return result
  optimizer = optimizer_lib.make_optimizer(config.optimizer)
  result.programs.append(compile_lib.train_program(target, model, optimizer, d.batch_size, d.num_steps,
                                                   pipeline.carries_state(d), config.seed))
  result.programs.append(compile_lib.eval_program(target, model, d.batch_size, d.num_steps, config.seed))
  if members:
    result.programs.append(compile_lib.population_program(target, config, vocab_size, members))
  if estimate and result.ok and hasattr(model, "candidates"):
    from lstm_jax.aot import estimate as estimate_lib  # noqa: PLC0415
    result.estimates = estimate_lib.target_estimates(model, optimizer, target, d.batch_size, d.num_steps,
                                                     pipeline.carries_state(d), config.seed)
  return result


def run(config: ml_collections.ConfigDict, target_names: Sequence[str], members: int = 0,
        print_fn=print, estimate: bool = True) -> int:
  """Compiles ``config`` for every target, printing one line each as it finishes; returns the exit status.
  Problems before any compile (unknown target, bad config, missing packages or corpus) print one ``error:`` line."""
  try:
    validation.check(config)
    for name in target_names:
      targets_lib.family(name)
  except (validation.ConfigError, targets_lib.UnknownTargetError) as e:
    print_fn(f"error: {e}")
    return EXIT_USAGE
  try:
    corpus = corpora.load(config.data)
    validation.check(config, corpus)
    targets = targets_lib.resolve_all(list(target_names))
  except (validation.ConfigError, targets_lib.UnknownTargetError) as e:
    print_fn(f"error: {e}")
    return EXIT_USAGE
  except (targets_lib.MissingPackagesError, corpora.CorpusError, OSError) as e:
    print_fn(f"error: {e}")
    return EXIT_FAILED
  ok = True
  for target in targets:
    result = compile_target(config, target, len(corpus.vocab), members, estimate)
    print_fn(result.line())
    if result.estimates is not None:
      print_fn(result.estimates.line())
    ok &= result.ok
  return EXIT_OK if ok else EXIT_FAILED
