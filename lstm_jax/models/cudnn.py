"""The language model with its LSTM layers run by cuDNN (``model.implementation=cudnn``): the library anchor on GPU.

Parameters, carry and head are exactly ``lstm_jax.models.scratch.LanguageModel``'s (so checkpoints, evaluation,
generation and the converters are shared); only the recurrence differs: the layers' weights are packed into cuDNN's
flat vector (``lstm_jax.interop.cudnn.to_cudnn``, differentiable) and all layers run in one
``jax.experimental.rnn.lstm`` call on batch-major one-hot (or embedded) inputs ``[B, T, in]``. CUDA GPUs only:
elsewhere the model refuses to build, naming the implementations that run there.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from lstm_jax.cells.lstm import LSTMCarry
from lstm_jax.interop import cudnn
from lstm_jax.models import scratch as model_lib

# Swapped in by tests on CPU (jax.experimental.rnn.lstm_ref computes the same function in pure JAX).
cudnn_layers = cudnn.layers


@dataclasses.dataclass(frozen=True)
class CudnnLanguageModel(model_lib.LanguageModel):
  """``LanguageModel`` whose stacked LSTM is one cuDNN call; no dropout, no padded batches."""

  def hidden_states(self, params, tokens_TB: jax.Array, carry, dropout_rng: jax.Array | None = None,
                    seq_lengths: jax.Array | None = None) -> tuple[jax.Array, Any]:
    if seq_lengths is not None:
      raise ValueError("model.implementation=cudnn does not take padded batches; use implementation=scratch.")
    tokens_BT = tokens_TB.T
    xs_BTI = params["embed"][tokens_BT] if "embed" in params else jax.nn.one_hot(tokens_BT, self.vocab_size)
    input_size = xs_BTI.shape[-1]
    h0 = jnp.stack([layer_carry.h for layer_carry in carry])
    c0 = jnp.stack([layer_carry.c for layer_carry in carry])
    ys_BTH, h_n, c_n = cudnn_layers(cudnn.to_cudnn(params["layers"]), xs_BTI, h0, c0, input_size=input_size,
                                    hidden_size=self.hidden_size, num_layers=self.num_layers)
    new_carry = tuple(LSTMCarry(h=h_n[k], c=c_n[k]) for k in range(self.num_layers))
    return jnp.swapaxes(ys_BTH, 0, 1), new_carry


def from_settings(vocab_size: int, settings: dict[str, Any]) -> CudnnLanguageModel:
  """Builds the cuDNN model from ``config.model`` settings, refusing what cuDNN's LSTM cannot run."""
  if not cudnn.cudnn_available() and cudnn_layers is cudnn.layers:
    raise ValueError(f"model.implementation=cudnn needs a CUDA GPU (this machine's JAX backend: "
                     f"{jax.default_backend()}); implementations that run here: scratch (recurrence auto, scan, "
                     f"fused_vjp or pallas), flax, flax_optimized.")
  if settings.get("cell", "lstm") != "lstm":
    raise ValueError(f"model.implementation=cudnn runs the LSTM only, not {settings['cell']!r}; set "
                     f"--config.model.cell=lstm or --config.model.implementation=scratch.")
  if settings.get("dropout", 0.0) or settings.get("matmul_dtype", "float32") != "float32":
    raise ValueError("model.implementation=cudnn runs float32 without dropout; set model.dropout=0 and "
                     "model.matmul_dtype=float32, or use implementation=scratch.")
  return CudnnLanguageModel(vocab_size=vocab_size, **settings)
