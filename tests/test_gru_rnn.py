"""GRU (both forms) and tanh RNN: scratch == linen == Flax cell == NumPy reference; gradients; finite differences."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util

from lstm_jax import cells
from lstm_jax.interop import flax as flax_interop
from lstm_jax.models import linen_layers as linen
from lstm_jax.models.scratch import LanguageModel

B, T, I, H = 3, 6, 5, 4


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def numpy_gru(params, xs_BTI, h0, reset_after):
  """Step-by-step float64 GRU, written from the papers' equations, gate blocks r, z, n."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  W_xr, W_xz, W_xn = np.split(p["W_x"], 3, axis=1)
  W_hr, W_hz, W_hn = np.split(p["W_h"], 3, axis=1)
  b_r, b_z, b_n = np.split(p["b"], 3)
  h, outputs = np.asarray(h0, np.float64), []
  for t in range(xs_BTI.shape[1]):
    x = np.asarray(xs_BTI[:, t], np.float64)
    r = _sigmoid(x @ W_xr + b_r + h @ W_hr)
    z = _sigmoid(x @ W_xz + b_z + h @ W_hz)
    if reset_after:
      n = np.tanh(x @ W_xn + b_n + r * (h @ W_hn + p["b_hn"]))
    else:
      n = np.tanh(x @ W_xn + b_n + (r * h) @ W_hn)
    h = z * h + (1 - z) * n
    outputs.append(h)
  return np.stack(outputs, 1), h


def numpy_rnn(params, xs_BTI, h0):
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  h, outputs = np.asarray(h0, np.float64), []
  for t in range(xs_BTI.shape[1]):
    h = np.tanh(np.asarray(xs_BTI[:, t], np.float64) @ p["W_x"] + p["b"] + h @ p["W_h"])
    outputs.append(h)
  return np.stack(outputs, 1), h


def _random_params(cell, key):
  params = cells.get_family(cell).init_params(key, I, H, "flax")
  # non-zero biases so that every term is exercised
  return {k: (v + 0.3 * jax.random.normal(jax.random.fold_in(key, i), v.shape)) if k.startswith("b") else v
          for i, (k, v) in enumerate(params.items())}


def _scratch(cell, params, xs_BTI, h0):
  family = cells.get_family(cell)
  h, hs_TBH = family.recurrence(params, family.project_inputs(params, jnp.swapaxes(xs_BTI, 0, 1)), h0)
  return jnp.swapaxes(hs_TBH, 0, 1), h


@pytest.mark.parametrize("cell", ["gru", "gru_reset_after", "rnn"])
def test_scratch_and_linen_equal_the_numpy_reference(cell):
  key = jax.random.key(0)
  params = _random_params(cell, key)
  xs = jax.random.normal(jax.random.key(1), (B, T, I))
  h0 = 0.5 * jax.random.normal(jax.random.key(2), (B, H))
  if cell == "rnn":
    expected_hs, expected_h = numpy_rnn(params, xs, h0)
  else:
    expected_hs, expected_h = numpy_gru(params, xs, h0, reset_after=(cell == "gru_reset_after"))
  hs, h = _scratch(cell, params, xs, h0)
  np.testing.assert_allclose(hs, expected_hs, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h, expected_h, rtol=1e-5, atol=1e-6)
  rnn = nn.RNN(linen.RecurrentCell(hidden_size=H, cell=cell), return_carry=True)
  h_linen, hs_linen = rnn.apply({"params": {"cell": params}}, xs, initial_carry=h0)
  np.testing.assert_allclose(hs_linen, expected_hs, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h_linen, expected_h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell, flax_cell, to_flax", [
    ("gru_reset_after", nn.GRUCell, flax_interop.to_flax_gru),
    ("rnn", nn.SimpleCell, flax_interop.to_flax_simple),
])
def test_scratch_equals_the_flax_cell_outputs_and_gradients(cell, flax_cell, to_flax):
  params = _random_params(cell, jax.random.key(3))
  xs = jax.random.normal(jax.random.key(4), (B, T, I))
  h0 = 0.5 * jax.random.normal(jax.random.key(5), (B, H))
  rnn = nn.RNN(flax_cell(features=H), return_carry=True)

  def scratch_loss(p, xs):
    hs, h = _scratch(cell, p, xs, h0)
    return jnp.sum(jnp.sin(hs)) + jnp.sum(h ** 2)

  def flax_loss(p, xs):
    h, hs = rnn.apply({"params": {"cell": to_flax(p)}}, xs, initial_carry=h0)
    return jnp.sum(jnp.sin(hs)) + jnp.sum(h ** 2)

  np.testing.assert_allclose(scratch_loss(params, xs), flax_loss(params, xs), rtol=1e-5)
  g_scratch = jax.grad(scratch_loss, argnums=(0, 1))(params, xs)
  g_flax = jax.grad(flax_loss, argnums=(0, 1))(params, xs)
  for a, b in zip(jax.tree.leaves(g_scratch), jax.tree.leaves(g_flax)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  from_flax = flax_interop.from_flax_gru if cell.startswith("gru") else flax_interop.from_flax_simple
  for a, b in zip(jax.tree.leaves(from_flax(to_flax(params))), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["gru", "gru_reset_after", "rnn"])
def test_finite_difference_gradients_in_float64(cell):
  with jax.enable_x64(True):
    params = jax.tree.map(lambda v: v.astype(jnp.float64), _random_params(cell, jax.random.key(6)))
    xs = jax.random.normal(jax.random.key(7), (2, 4, I), jnp.float64)
    h0 = jnp.zeros((2, H), jnp.float64)

    def loss(p, xs):
      hs, h = _scratch(cell, p, xs, h0)
      return jnp.sum(jnp.cos(hs)) + jnp.sum(h)

    test_util.check_grads(loss, (params, xs), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_stacked_language_model_trains_with_these_cells(cell):
  model = LanguageModel(vocab_size=9, hidden_size=6, num_layers=2, cell=cell, dropout=0.3, init_scheme="flax")
  params = model.init(jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 5), 0, 9)
  logits, carry = model.apply(params, tokens, dropout_rng=jax.random.key(2))
  assert logits.shape == (2, 5, 9) and len(carry) == 2
  logits_eval, _ = model.apply(params, tokens)
  assert not np.allclose(logits, logits_eval)  # dropout acts only when a dropout key is given
