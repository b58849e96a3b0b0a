"""cuDNN interop: our LSTM layers <-> the flat weight vector of ``jax.experimental.rnn`` (cuDNN's LSTM).

``jax.experimental.rnn.lstm(x [B, T, in], h_0, c_0 [layers, B, H], weights [P], seq_lengths [B] int32, ...)`` is
batch-major and takes ONE flat vector ``P = get_num_params_in_lstm(in, H, layers, False)`` laid out (unidirectional)
as ``W_ih^0 [4H, in], W_hh^0 [4H, H], W_ih^1 [4H, H], W_hh^1, ..., b_ih^0 [4H], b_hh^0, b_ih^1, b_hh^1, ...``
(row-major, gate blocks i, f, g, o as PyTorch and ours). So per layer ``W_ih = W_x.T``, ``W_hh = W_h.T``; our
single bias ``b`` is cuDNN's ``b_ih + b_hh``: ``to_cudnn`` puts ``b`` in ``b_ih`` and zeros in ``b_hh``,
``from_cudnn`` sums them. ``lstm`` runs only on CUDA (and ROCm); ``lstm_ref``, its pure-JAX reference, runs
everywhere, which is what ``reference_layers`` (and the CPU tests of the conversion) use.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import rnn as jrnn

from lstm_jax.cells import lstm


def num_params(input_size: int, hidden_size: int, num_layers: int) -> int:
  """Length of the flat cuDNN weight vector (unidirectional)."""
  return jrnn.get_num_params_in_lstm(input_size, hidden_size, num_layers, False)


def to_cudnn(layers) -> jax.Array:
  """Our layers (a tuple of ``{"W_x": [in, 4H], "W_h": [H, 4H], "b": [4H]}``) -> the flat vector ``[P]``."""
  weights, biases = [], []
  for layer in layers:
    weights += [jnp.asarray(layer["W_x"]).T.reshape(-1), jnp.asarray(layer["W_h"]).T.reshape(-1)]
    biases += [jnp.asarray(layer["b"]).reshape(-1), jnp.zeros_like(jnp.asarray(layer["b"]).reshape(-1))]
  return jnp.concatenate(weights + biases)


def unpack(flat_weights: jax.Array, *, input_size: int, hidden_size: int, num_layers: int):
  """The flat vector -> ``(W_ih, W_hh, b_ih, b_hh)`` dicts by layer, as ``jax.experimental.rnn`` unpacks them."""
  expected = num_params(input_size, hidden_size, num_layers)
  if flat_weights.shape != (expected,):
    raise ValueError(f"flat cuDNN weights have shape {flat_weights.shape}, expected ({expected},) for "
                     f"input_size={input_size}, hidden_size={hidden_size}, num_layers={num_layers}")
  return jrnn.unpack_lstm_weights(flat_weights, input_size, hidden_size, num_layers, False)


def from_cudnn(flat_weights: jax.Array, *, input_size: int, hidden_size: int,
               num_layers: int) -> tuple[dict[str, jax.Array], ...]:
  """The flat vector ``[P]`` -> our layers tuple (``b = b_ih + b_hh``)."""
  W_ih, W_hh, b_ih, b_hh = unpack(flat_weights, input_size=input_size, hidden_size=hidden_size,
                                  num_layers=num_layers)
  return tuple({"W_x": W_ih[k].T, "W_h": W_hh[k].T, "b": b_ih[k] + b_hh[k]} for k in range(num_layers))


def cudnn_available() -> bool:
  """True when the default backend is a CUDA GPU (where ``jax.experimental.rnn.lstm`` runs cuDNN)."""
  try:
    if jax.default_backend() != "gpu":
      return False
    return "rocm" not in str(getattr(jax.devices()[0].client, "platform_version", "")).lower()
  except Exception:  # noqa: BLE001  (no backend / odd plugin: not available)
    return False


def cudnn_in_jaxlib() -> bool:
  """True when this jaxlib has the CUDA plugin's cuDNN RNN (workspace sizing, descriptors), which
  ``jax.experimental.rnn.lstm`` needs to be traced and lowered."""
  from jax._src.lib import gpu_rnn  # noqa: PLC0415
  return gpu_rnn is not None and hasattr(gpu_rnn, "compute_rnn_workspace_reserve_space_sizes")


def _check_states(xs_BTI, h0, c0, hidden_size, num_layers):
  B = xs_BTI.shape[0]
  for name, s in (("h0", h0), ("c0", c0)):
    if s.shape != (num_layers, B, hidden_size):
      raise ValueError(f"{name} has shape {s.shape}, expected [num_layers, B, H] = {(num_layers, B, hidden_size)}")


def layers(flat_weights, xs_BTI, h0, c0, *, input_size: int, hidden_size: int, num_layers: int):
  """cuDNN's multi-layer LSTM: ``xs [B, T, in]``, ``h0/c0 [layers, B, H]`` -> ``(ys [B, T, H], h_n, c_n)``.

  Needs the CUDA jaxlib (it runs on CUDA GPUs; ``jax.export`` can also lower it for ``cuda`` elsewhere); without
  it raises RuntimeError naming what runs here instead.
  """
  needs_gpu = (f"cuDNN LSTM needs a CUDA GPU (backend here: {jax.default_backend()}); use recurrence 'scan', "
               "'fused_vjp' or 'pallas' (interpret mode on CPU), or the implementations 'scratch', 'flax', "
               "'flax_optimized'")
  if not cudnn_in_jaxlib():
    raise RuntimeError(needs_gpu)
  _check_states(xs_BTI, h0, c0, hidden_size, num_layers)
  seq_lengths = jnp.full((xs_BTI.shape[0],), xs_BTI.shape[1], jnp.int32)
  try:
    return jrnn.lstm(xs_BTI, h0, c0, flat_weights, seq_lengths, input_size=input_size, hidden_size=hidden_size,
                     num_layers=num_layers, dropout=0.0, bidirectional=False)
  except RuntimeError as e:  # the CUDA plugin without a GPU (e.g. the aot extra on a CPU machine): cuDNN is absent
    if "cuDNN could not be found" in str(e):
      raise RuntimeError(needs_gpu) from None
    raise


def reference_layers(flat_weights, xs_BTI, h0, c0, *, input_size: int, hidden_size: int, num_layers: int):
  """The same computation through ``jax.experimental.rnn.lstm_ref`` (pure JAX, any backend)."""
  _check_states(xs_BTI, h0, c0, hidden_size, num_layers)
  W_ih, W_hh, b_ih, b_hh = unpack(flat_weights, input_size=input_size, hidden_size=hidden_size,
                                  num_layers=num_layers)
  seq_lengths = jnp.full((xs_BTI.shape[0],), xs_BTI.shape[1], jnp.int32)
  return jrnn.lstm_ref(xs_BTI, h0, c0, W_ih, W_hh, b_ih, b_hh, seq_lengths, input_size, hidden_size, num_layers,
                       0.0, False)


def scratch_layers(layer_params, xs_BTI, h0, c0, recurrence=lstm.recurrence):
  """Our stacked LSTM with cuDNN's interface: batch-major ``xs [B, T, in]``, ``h0/c0 [layers, B, H]`` ->
  ``(ys [B, T, H], h_n, c_n)``; runs time-major inside (one transpose in, one out)."""
  hs_TBH = jnp.swapaxes(xs_BTI, 0, 1)
  h_n, c_n = [], []
  for k, params in enumerate(layer_params):
    final, hs_TBH = recurrence(params, lstm.project_inputs(params, hs_TBH), lstm.LSTMCarry(h0[k], c0[k]))
    h_n.append(final.h)
    c_n.append(final.c)
  return jnp.swapaxes(hs_TBH, 0, 1), jnp.stack(h_n), jnp.stack(c_n)
