"""Scratch against library cells: the same weights on the same minibatches give the same loss curve."""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from lstm_jax.d2l.rows import load_config
from lstm_jax.data import corpora
from lstm_jax.data import pipeline
from lstm_jax.models import library as library_model
from lstm_jax.models import scratch as model_lib
from lstm_jax.train import loop as train
from lstm_jax.train import optimizer as optimizer_lib
from lstm_jax.train import state as train_state_lib

LIBRARY_PAIRS = (("lstm", "flax"), ("lstm", "flax_optimized"), ("gru_reset_after", "flax"), ("rnn", "flax"))


def scratch_vs_library(cell: str, implementation: str, num_steps: int, seed: int = 0) -> dict[str, Any]:
  """Trains the scratch model and the Flax-cell model from the same weights on the same minibatches (the tm2019
  LSTM row's data and optimizer) and returns both loss curves and both speeds."""
  import jax  # noqa: PLC0415
  from lstm_jax.data import corpora  # noqa: PLC0415
  from lstm_jax.models import library as library_model  # noqa: PLC0415
  from lstm_jax.models import scratch as model_lib
  from lstm_jax.train import loop as train

  config = load_config("d2l_2019.py:model=lstm,impl=scratch")
  corpus = corpora.load(config.data)
  batch_size = config.data.batch_size
  scratch = model_lib.LanguageModel(vocab_size=len(corpus.vocab), hidden_size=config.model.hidden_size, cell=cell)
  library = library_model.LibraryLanguageModel(vocab_size=len(corpus.vocab), hidden_size=config.model.hidden_size,
                                               cell=cell, optimized=implementation == "flax_optimized")
  optimizer = optimizer_lib.make_optimizer(config.optimizer)
  scratch_state = train_state_lib.create_train_state(scratch, optimizer, seed, batch_size)
  library_params = library_model.from_scratch_params(cell, scratch_state.params)
  library_state = train_state_lib.TrainState(library_params, optimizer.init(library_params), scratch_state.step,
                                   scratch_state.rng, library.zero_carry(batch_size))
  library_state = jax.tree.map(lambda x: x.copy(), library_state)  # the train step donates its state
  batches = []
  epoch = 1
  while len(batches) < num_steps:
    batches += pipeline.epoch_batches(config, corpus, epoch)  # the train loop's own epoch order
    epoch += 1
  batches = batches[:num_steps]
  result = {"cell": cell, "implementation": implementation, "steps": num_steps}
  for name, model, state in (("scratch", scratch, scratch_state), ("library", library, library_state)):
    step_fn = train.compile_train_step(model, optimizer, carry_state=True)
    losses, tokens = [], 0
    state, metrics = step_fn(state, *batches[0])  # compile outside the timing
    losses.append(metrics["nll_sum"] / batches[0][1].size)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for inputs, targets in batches[1:]:
      state, metrics = step_fn(state, inputs, targets)
      losses.append(metrics["nll_sum"] / targets.size)
      tokens += targets.size
    jax.block_until_ready(metrics)
    result[name + "_tokens_per_sec"] = tokens / max(time.perf_counter() - start, 1e-9)
    result[name + "_losses"] = [float(x) for x in losses]
  a, b = np.asarray(result["scratch_losses"]), np.asarray(result["library_losses"])
  result["max_rel_diff"] = float(np.max(np.abs(a - b) / np.abs(a)))
  return result


def library_table(results: list[dict[str, Any]]) -> list[str]:
  lines = ["| cell | library | steps | first loss | last loss (scratch / library) | max relative difference "
           "| scratch tokens/s | library tokens/s |", "|---|---|---|---|---|---|---|---|"]
  for r in results:
    lines.append(f"| {r['cell']} | {r['implementation']} | {r['steps']} | {r['scratch_losses'][0]:.6f} | "
                 f"{r['scratch_losses'][-1]:.6f} / {r['library_losses'][-1]:.6f} | {r['max_rel_diff']:.2e} | "
                 f"{r['scratch_tokens_per_sec']:,.0f} | {r['library_tokens_per_sec']:,.0f} |")
  return lines
