"""The model a config names (``config.model.implementation``): our scratch ``LanguageModel`` (``lstm_jax.model``),
the library model over Flax's cells (``lstm_jax.library_model``) or cuDNN's LSTM (``lstm_jax.cudnn_model``). All
three share ``init(key)``, ``apply(params, tokens_BT, carry)`` and ``zero_carry(batch)``.
"""

from __future__ import annotations

import dataclasses

from lstm_jax import cudnn_model
from lstm_jax import library_model
from lstm_jax import model as model_lib

IMPLEMENTATIONS = ("scratch", "flax", "flax_optimized", "cudnn")


def from_config(model_config, vocab_size: int):
  """Builds the model from the ``config.model`` section; the vocabulary size is filled in from the data."""
  settings = dict(model_config.items())
  implementation = settings.pop("implementation", "scratch")
  if implementation in ("flax", "flax_optimized"):
    if settings.get("matmul_dtype", "float32") != "float32":
      raise ValueError(f"model.matmul_dtype={settings['matmul_dtype']} applies to our own recurrences; Flax's cells "
                       f"run float32 here. Use --config.model.implementation=scratch or matmul_dtype=float32.")
    library_fields = {f.name for f in dataclasses.fields(library_model.LibraryLanguageModel)}
    return library_model.LibraryLanguageModel(
        vocab_size=vocab_size, optimized=implementation == "flax_optimized",
        **{k: v for k, v in settings.items() if k in library_fields and k != "optimized"})
  if implementation not in ("scratch", "cudnn"):
    raise ValueError(f"Unknown model.implementation {implementation!r}; choose one of {IMPLEMENTATIONS}.")
  fields = {f.name for f in dataclasses.fields(model_lib.LanguageModel)} - {"vocab_size"}
  unknown = sorted(set(settings) - fields)
  if unknown:
    raise ValueError(f"Unknown config.model keys {unknown}; valid keys are {sorted(fields)}.")
  if implementation == "cudnn":
    return cudnn_model.from_settings(vocab_size, settings)
  return model_lib.LanguageModel(vocab_size=vocab_size, **settings)
