"""The language model, in the forms a config names (``config.model.implementation``), behind one interface
(``interface.LanguageModelLike``: ``init``, ``apply``, ``zero_carry``):

- ``scratch``: ``LanguageModel``, over the scratch cells (``lstm_jax.cells``) and their recurrences (scan,
  fused_vjp, the Pallas kernels of ``lstm_jax.kernels``); the default, and the only form with every option.
- ``library``: the same model over Flax linen's own cells (``nn.LSTMCell``, ``nn.OptimizedLSTMCell``, ...).
- ``nnx_model``: the scratch cells as ``flax.nnx`` modules (``nnx_layers``); ``linen_layers`` has them as linen.
- ``cudnn``: ``jax.experimental.rnn``'s cuDNN LSTM (CUDA GPUs).
- ``variable_length``: padded batches of sequences of different lengths.
- ``factory``: ``from_config``, the form a config's ``model`` section names.
"""

from __future__ import annotations

import importlib
from typing import Any

_FACTORY = ("from_config", "IMPLEMENTATIONS")


def __getattr__(name: str) -> Any:
  if name in _FACTORY:  # lstm_jax.models.from_config: the factory's, imported when first asked for
    return getattr(importlib.import_module("lstm_jax.models.factory"), name)
  raise AttributeError(f"module 'lstm_jax.models' has no attribute {name!r}")
