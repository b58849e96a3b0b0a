"""The hand-written LSTM backward (lstm_jax.cells.lstm_fused_vjp) against autodiff of the plain cell, and finite
differences in float64; its selection in the language model, and a train step of every cell with a hand-written
backward (model.FUSED_VJP) equal under either recurrence."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import test_util

import numpy_reference
from lstm_jax.cells import lstm, lstm_fused_vjp
from lstm_jax.models import scratch as model_lib
from lstm_jax.train import loop as train_lib
from lstm_jax.train import state as train_state_lib

T, B, IN, H = 6, 3, 5, 4
TOL = dict(rtol=1e-5, atol=1e-6)


def _normal(seed, shape, dtype=np.float32):
  return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _problem(dtype=np.float32):
  params = {k: np.asarray(v, dtype) for k, v in numpy_reference.random_lstm_params(1, IN, H).items()}
  params["b"] = params["b"] + _normal(9, (4 * H,), dtype)  # a non-zero bias, so every gate is exercised
  carry = lstm.LSTMCarry(h=_normal(2, (B, H), dtype), c=_normal(3, (B, H), dtype))
  return params, _normal(0, (T, B, IN), dtype), carry


def _loss(layer_fn, params, xs, carry):
  """Touches every output: all hidden states (non-uniform weights) and both parts of the final carry."""
  final, hs = layer_fn(params, xs, carry)
  weights = jnp.linspace(-1.0, 2.0, hs.size, dtype=hs.dtype).reshape(hs.shape)
  return jnp.sum(jnp.sin(hs) * weights) + jnp.sum(final.h ** 2) - 0.5 * jnp.sum(final.c * final.h) + jnp.sum(final.c)


def test_forward_matches_plain_cell_and_numpy_reference():
  params, xs, carry = _problem()
  fast_carry, fast_hs = jax.jit(lstm_fused_vjp.layer)(params, xs, carry)
  plain_carry, plain_hs = lstm.layer(params, xs, carry)
  np.testing.assert_allclose(fast_hs, plain_hs, **TOL)
  np.testing.assert_allclose(fast_carry.h, plain_carry.h, **TOL)
  np.testing.assert_allclose(fast_carry.c, plain_carry.c, **TOL)
  hs_ref, h_ref, c_ref = numpy_reference.lstm_layer(params, xs, np.asarray(carry.h), np.asarray(carry.c))
  np.testing.assert_allclose(fast_hs, hs_ref, **TOL)
  np.testing.assert_allclose(fast_carry.c, c_ref, **TOL)


@pytest.mark.parametrize("unroll", [1, 2])
def test_gradients_match_autodiff_of_plain_cell(unroll):
  params, xs, carry = _problem()
  grad = lambda layer_fn: jax.jit(jax.grad(
      lambda p, x, c: _loss(lambda *a: layer_fn(*a, unroll=unroll), p, x, c), argnums=(0, 1, 2)))
  fast = grad(lstm_fused_vjp.layer)(params, xs, carry)
  plain = grad(lstm.layer)(params, xs, carry)
  for name in ("W_x", "W_h", "b"):
    np.testing.assert_allclose(fast[0][name], plain[0][name], **TOL, err_msg=name)
  np.testing.assert_allclose(fast[1], plain[1], **TOL)
  np.testing.assert_allclose(fast[2].h, plain[2].h, **TOL)
  np.testing.assert_allclose(fast[2].c, plain[2].c, **TOL)
  assert all(float(jnp.abs(g).max()) > 1e-3 for g in jax.tree.leaves(fast))  # no path silently zero


def test_custom_vjp_against_finite_differences_in_float64():
  with jax.enable_x64(True):
    params, xs, carry = _problem(np.float64)
    test_util.check_grads(lambda p, x, c: _loss(lstm_fused_vjp.layer, p, x, c), (params, xs, carry), order=1,
                          modes=["rev"], atol=1e-6, rtol=1e-6)


def test_single_step_sequence_and_vjp_of_hidden_states_only():
  params, xs, carry = _problem()
  xs = xs[:1]
  f = lambda layer_fn: jax.grad(lambda p: jnp.sum(layer_fn(p, xs, carry)[1] * 3.0))(params)
  for name, value in f(lstm_fused_vjp.layer).items():
    np.testing.assert_allclose(value, f(lstm.layer)[name], **TOL, err_msg=name)


def _train_once(cell, recurrence):
  model = model_lib.LanguageModel(vocab_size=7, hidden_size=H, num_layers=2, cell=cell, init_scheme="pytorch",
                                  recurrence=recurrence)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.5))
  state = train_state_lib.create_train_state(model, optimizer, seed=0, batch_size=B)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 7, (B, T + 1)), jnp.int32)
  step = train_lib.compile_train_step(model, optimizer, carry_state=True)
  state, metrics = step(state, tokens[:, :-1], tokens[:, 1:])
  return state, metrics


@pytest.mark.parametrize("cell", sorted(model_lib.FUSED_VJP))
def test_language_model_train_step_same_with_either_recurrence(cell):
  fast_state, fast_metrics = _train_once(cell, "fused_vjp")
  plain_state, plain_metrics = _train_once(cell, "scan")
  np.testing.assert_allclose(fast_metrics["nll_sum"], plain_metrics["nll_sum"], **TOL)
  np.testing.assert_allclose(fast_metrics["grad_norm"], plain_metrics["grad_norm"], rtol=1e-5)
  for fast, plain in zip(jax.tree.leaves(fast_state.params), jax.tree.leaves(plain_state.params)):
    np.testing.assert_allclose(fast, plain, **TOL)
  for fast, plain in zip(jax.tree.leaves(fast_state.carry), jax.tree.leaves(plain_state.carry)):
    np.testing.assert_allclose(fast, plain, **TOL)


def test_recurrence_selection():
  assert model_lib.LanguageModel(vocab_size=5).recurrence_fn is lstm_fused_vjp.recurrence  # "auto" for the LSTM
  assert model_lib.LanguageModel(vocab_size=5, recurrence="scan").recurrence_fn is lstm.recurrence
  with pytest.raises(ValueError, match="recurrence"):
    _ = model_lib.LanguageModel(vocab_size=5, recurrence="cudnn").recurrence_fn
