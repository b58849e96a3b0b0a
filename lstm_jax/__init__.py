"""lstm_jax: a fused LSTM written from scratch in JAX, its Pallas kernels, the same cell in Flax (linen), and
character language models that reproduce the D2L perplexity tables.

The names below are the public Python API; ``python -m lstm_jax.main`` (or ``lstm-jax-train``) is the training
command. Submodules import lazily, so ``import lstm_jax`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from lstm_jax import _moved

__version__ = "0.3.0"

_PUBLIC = {
    "LanguageModel": ("lstm_jax.models.scratch", "LanguageModel"),
    "LSTMCarry": ("lstm_jax.cells.lstm", "LSTMCarry"),
    "default_config": ("lstm_jax.config", "default_config"),
    "from_config": ("lstm_jax.models.factory", "from_config"),
    "train_and_evaluate": ("lstm_jax.train.loop", "train_and_evaluate"),
    "load_params": ("lstm_jax.train.checkpoint", "load_params"),
    "generate_text": ("lstm_jax.train.generate", "generate_text"),
    "evaluate_ids": ("lstm_jax.train.evaluate", "evaluate_ids"),
}
__all__ = ["__version__", *_PUBLIC]

_moved.install()


def __getattr__(name: str) -> Any:
  if name in _PUBLIC:
    module, attribute = _PUBLIC[name]
    return getattr(importlib.import_module(module), attribute)
  raise AttributeError(f"module 'lstm_jax' has no attribute {name!r}")
