"""Training and what it needs, one module per concept:

- ``loop``: ``train_and_evaluate`` (the jitted step and the epochs); ``state``: the train state and what is saved.
- ``optimizer``, ``loss``: the optax chain a config names; cross-entropy, masked.
- ``checkpoint``, ``workdir``: orbax checkpoints (exact resume, the best one); the run directory and its lock.
- ``metrics``, ``progress``, ``plots``: metric files and TensorBoard; progress lines with an ETA; perplexity.png.
- ``evaluate``, ``generate``: perplexity over a text; decoding in one compiled loop.
- ``validation``: a config checked before anything runs; ``sharding``, ``multihost``: devices and hosts.
"""

from __future__ import annotations

import importlib
from typing import Any

from lstm_jax import _moved

# The names lstm_jax 0.3's ``lstm_jax.train`` module had; they live in ``lstm_jax.train.loop`` now.
_LOOP = ("train_and_evaluate", "train_step", "compile_train_step", "StopRequest", "NonFiniteLossError", "Run",
         "start_run", "restore_or_init", "train_epoch", "end_of_epoch", "epoch_record", "MAX_LOSS")


def __getattr__(name: str) -> Any:
  if name in _LOOP:
    _moved.moved_warning(f"lstm_jax.train.{name}", f"lstm_jax.train.loop.{name}")
    return getattr(importlib.import_module("lstm_jax.train.loop"), name)
  raise AttributeError(f"module 'lstm_jax.train' has no attribute {name!r}")
