"""The model a config names (``config.model.implementation``): our scratch ``LanguageModel``
(``lstm_jax.models.scratch``), the library model over Flax's cells (``lstm_jax.models.library``), the scratch cells as
flax.nnx modules (``lstm_jax.models.nnx_model``) or cuDNN's LSTM (``lstm_jax.models.cudnn``); each is a
``lstm_jax.models.interface.LanguageModelLike``. The run passes where the model runs (``placement``); the
regularizer options are refused in one line by every form but the scratch one.
"""

from __future__ import annotations

import dataclasses

from lstm_jax.models import cudnn as cudnn_model
from lstm_jax.models import library as library_model
from lstm_jax.models import nnx_model
from lstm_jax.models import regularizers
from lstm_jax.models import scratch as model_lib
from lstm_jax.models.placement import Placement

IMPLEMENTATIONS = ("scratch", "flax", "flax_optimized", "nnx", "cudnn")


def from_config(model_config, vocab_size: int, placement: Placement = Placement()):
  """Builds the model from the ``config.model`` section; the vocabulary size is filled in from the data and the
  placement (where the scratch model runs: ``lstm_jax.models.placement``) from the run; the other implementations
  run on this machine as they are."""
  settings = dict(model_config.items())
  implementation = settings.pop("implementation", "scratch")
  refused = regularizers.problems(settings, implementation)
  if refused:
    raise ValueError(refused[0])
  if implementation != "scratch":  # the options are off (checked above): the other forms do not have the fields
    settings = {k: v for k, v in settings.items() if k not in regularizers.OPTIONS}
  if implementation in ("flax", "flax_optimized"):
    if settings.get("matmul_dtype", "float32") != "float32":
      raise ValueError(f"model.matmul_dtype={settings['matmul_dtype']} applies to our own recurrences; Flax's cells "
                       f"run float32 here. Use --config.model.implementation=scratch or matmul_dtype=float32.")
    library_fields = {f.name for f in dataclasses.fields(library_model.LibraryLanguageModel)}
    return library_model.LibraryLanguageModel(
        vocab_size=vocab_size, optimized=implementation == "flax_optimized",
        **{k: v for k, v in settings.items() if k in library_fields and k != "optimized"})
  if implementation == "nnx":
    return _nnx_model(settings, vocab_size)
  if implementation not in ("scratch", "cudnn"):
    raise ValueError(f"Unknown model.implementation {implementation!r}; choose one of {IMPLEMENTATIONS}.")
  fields = {f.name for f in dataclasses.fields(model_lib.LanguageModel)} - {"vocab_size", "placement"}
  unknown = sorted(set(settings) - fields)
  if unknown:
    raise ValueError(f"Unknown config.model keys {unknown}; valid keys are {sorted(fields)}.")
  if implementation == "cudnn":
    return cudnn_model.from_settings(vocab_size, settings)
  return model_lib.LanguageModel(vocab_size=vocab_size, placement=placement, **settings)


def _nnx_model(settings: dict, vocab_size: int) -> nnx_model.NnxLanguageModel:
  """``model.implementation=nnx``: the NNX modules differentiate through the cell's ``lax.scan`` in float32, so
  ``recurrence`` may be auto or scan (auto means scan here) and ``matmul_dtype`` float32; other keys as scratch."""
  recurrence = settings.pop("recurrence", "auto")
  if recurrence not in ("auto", "scan"):
    raise ValueError(f"model.recurrence={recurrence} is not available with model.implementation=nnx (it runs the "
                     f"cell's lax.scan); set --config.model.recurrence=scan or implementation=scratch.")
  matmul_dtype = settings.pop("matmul_dtype", "float32")
  if matmul_dtype != "float32":
    raise ValueError(f"model.matmul_dtype={matmul_dtype} is not available with model.implementation=nnx (float32 "
                     f"only); set --config.model.matmul_dtype=float32 or implementation=scratch.")
  fields = {f.name for f in dataclasses.fields(nnx_model.NnxLanguageModel)} - {"vocab_size"}
  unknown = sorted(set(settings) - fields)
  if unknown:
    raise ValueError(f"Unknown config.model keys {unknown} for model.implementation=nnx; valid keys are "
                     f"{sorted(fields | {'recurrence', 'matmul_dtype'})}.")
  return nnx_model.NnxLanguageModel(vocab_size=vocab_size, **settings)
