"""An independent LSTM in float64 NumPy, one time step and one gate at a time, for the equivalence tests.

It shares nothing with lstm_jax but the parameter layout: ``W_x [in, 4H]``, ``W_h [H, 4H]``, ``b [4H]`` with the
gate blocks in the order i, f, g, o (the order of PyTorch's ``nn.LSTM``).
"""

import numpy as np


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def lstm_layer(params, xs_TBI, h0_BH=None, c0_BH=None):
  """Returns ``(hs [T, B, H], h_T [B, H], c_T [B, H])`` for time-major inputs ``[T, B, in]``."""
  W_x, W_h, b = (np.asarray(params[name], np.float64) for name in ("W_x", "W_h", "b"))
  xs = np.asarray(xs_TBI, np.float64)
  hidden = W_h.shape[0]
  num_steps, batch = xs.shape[:2]
  h = np.zeros((batch, hidden)) if h0_BH is None else np.asarray(h0_BH, np.float64)
  c = np.zeros((batch, hidden)) if c0_BH is None else np.asarray(c0_BH, np.float64)

  def gate(k, x, h):  # pre-activation of gate block k
    cols = slice(k * hidden, (k + 1) * hidden)
    return x @ W_x[:, cols] + h @ W_h[:, cols] + b[cols]

  hs = []
  for t in range(num_steps):
    x = xs[t]
    input_gate = _sigmoid(gate(0, x, h))
    forget_gate = _sigmoid(gate(1, x, h))
    candidate = np.tanh(gate(2, x, h))
    output_gate = _sigmoid(gate(3, x, h))
    c = forget_gate * c + input_gate * candidate
    h = output_gate * np.tanh(c)
    hs.append(h)
  return np.stack(hs), h, c


def random_lstm_params(seed, input_size, hidden_size, scale=0.5, dtype=np.float32):
  """N(0, scale^2) entries everywhere, biases included: far from any init scheme, so mistakes show."""
  rng = np.random.default_rng(seed)
  fused = 4 * hidden_size
  return {"W_x": (scale * rng.standard_normal((input_size, fused))).astype(dtype),
          "W_h": (scale * rng.standard_normal((hidden_size, fused))).astype(dtype),
          "b": (scale * rng.standard_normal(fused)).astype(dtype)}


def lstm_variant_layer(variant, params, xs_TBI):
  """The peephole or coupled (CIFG) LSTM of ``lstm_jax.cells.lstm_variants``, step by step in float64.

  peephole: gate blocks i, f, g, o plus ``peephole [3, H]`` (p_i, p_f on the old cell, p_o on the new one);
  coupled: gate blocks i, g, o and f = 1 - i. Returns ``(hs [T, B, H], h_T, c_T)`` from a zero state.
  """
  W_x, W_h, b = (np.asarray(params[name], np.float64) for name in ("W_x", "W_h", "b"))
  xs = np.asarray(xs_TBI, np.float64)
  hidden = W_h.shape[0]
  h = np.zeros((xs.shape[1], hidden))
  c = np.zeros((xs.shape[1], hidden))

  def gate(k, x, h):
    cols = slice(k * hidden, (k + 1) * hidden)
    return x @ W_x[:, cols] + h @ W_h[:, cols] + b[cols]

  hs = []
  for x in xs:
    if variant == "peephole":
      p_i, p_f, p_o = np.asarray(params["peephole"], np.float64)
      input_gate = _sigmoid(gate(0, x, h) + p_i * c)
      forget_gate = _sigmoid(gate(1, x, h) + p_f * c)
      c = forget_gate * c + input_gate * np.tanh(gate(2, x, h))
      h = _sigmoid(gate(3, x, h) + p_o * c) * np.tanh(c)
    elif variant == "coupled":
      input_gate = _sigmoid(gate(0, x, h))
      c = (1.0 - input_gate) * c + input_gate * np.tanh(gate(1, x, h))
      h = _sigmoid(gate(2, x, h)) * np.tanh(c)
    else:
      raise ValueError(variant)
    hs.append(h)
  return np.stack(hs), h, c
