"""The hand-written RNN backward (lstm_jax.cells.rnn_fused_vjp) against autodiff of the plain cell, a NumPy
reference and finite differences in float64; its selection in the language model (a whole train step under
either recurrence: tests/test_lstm_fused_vjp.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util

from lstm_jax.cells import rnn, rnn_fused_vjp
from lstm_jax.models import scratch as model_lib

T, B, IN, H = 6, 3, 5, 4
TOL = dict(rtol=1e-5, atol=1e-6)


def _problem(dtype=np.float32):
  rng = np.random.default_rng(0)
  params = {"W_x": rng.standard_normal((IN, H)), "W_h": 0.6 * rng.standard_normal((H, H)),
            "b": 0.3 * rng.standard_normal(H)}
  params = {k: np.asarray(v, dtype) for k, v in params.items()}
  return params, rng.standard_normal((T, B, IN)).astype(dtype), rng.standard_normal((B, H)).astype(dtype)


def _loss(layer_fn, params, xs, h0):
  """Touches every output: all hidden states (non-uniform weights) and the final state."""
  final, hs = layer_fn(params, xs, h0)
  weights = jnp.linspace(-1.0, 2.0, hs.size, dtype=hs.dtype).reshape(hs.shape)
  return jnp.sum(jnp.sin(hs) * weights) + jnp.sum(final ** 2)


def _plain_layer(params, xs, h0, unroll=1):
  return rnn.recurrence(params, rnn.project_inputs(params, xs), h0, unroll=unroll)


def test_forward_matches_plain_cell_and_a_numpy_loop():
  params, xs, h0 = _problem()
  final, hs = jax.jit(rnn_fused_vjp.layer)(params, xs, h0)
  plain_final, plain_hs = _plain_layer(params, xs, h0)
  np.testing.assert_allclose(hs, plain_hs, **TOL)
  np.testing.assert_allclose(final, plain_final, **TOL)
  h, expected = h0.astype(np.float64), []
  for t in range(T):
    h = np.tanh(xs[t] @ params["W_x"] + params["b"] + h @ params["W_h"])
    expected.append(h)
  np.testing.assert_allclose(hs, np.stack(expected), **TOL)


@pytest.mark.parametrize("unroll", [1, 2])
def test_gradients_match_autodiff_of_plain_cell(unroll):
  params, xs, h0 = _problem()
  grad = lambda layer_fn: jax.jit(jax.grad(
      lambda p, x, c: _loss(lambda *a: layer_fn(*a, unroll=unroll), p, x, c), argnums=(0, 1, 2)))
  fast = grad(rnn_fused_vjp.layer)(params, xs, h0)
  plain = grad(_plain_layer)(params, xs, h0)
  for name in ("W_x", "W_h", "b"):
    np.testing.assert_allclose(fast[0][name], plain[0][name], **TOL, err_msg=name)
  np.testing.assert_allclose(fast[1], plain[1], **TOL)
  np.testing.assert_allclose(fast[2], plain[2], **TOL)
  assert all(float(jnp.abs(g).max()) > 1e-3 for g in jax.tree.leaves(fast))  # no path silently zero


def test_custom_vjp_against_finite_differences_in_float64():
  with jax.enable_x64(True):
    params, xs, h0 = _problem(np.float64)
    test_util.check_grads(lambda p, x, c: _loss(rnn_fused_vjp.layer, p, x, c), (params, xs, h0), order=1,
                          modes=["rev"], atol=1e-6, rtol=1e-6)


def test_auto_selects_the_fused_backward_where_one_exists():
  assert model_lib.LanguageModel(vocab_size=5, cell="rnn").recurrence_fn is rnn_fused_vjp.recurrence
  assert model_lib.LanguageModel(vocab_size=5, cell="rnn", recurrence="scan").recurrence_fn is rnn.recurrence
  assert model_lib.LanguageModel(vocab_size=5, cell="gru").recurrence_fn is model_lib.cells.get_family("gru").recurrence
  with pytest.raises(ValueError, match="exists only for cells"):
    _ = model_lib.LanguageModel(vocab_size=5, cell="gru", recurrence="fused_vjp").recurrence_fn
