"""The flax.linen forms: RecurrentCell under nn.RNN and RecurrentLayer equal the scratch functions, per family."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layer_checks import B, FAMILY_NAMES, H, IN, T, TOL  # noqa: F401
from layer_checks import assert_trees_close as _assert_trees_close
from layer_checks import inputs as _inputs
from layer_checks import loss as _loss
from layer_checks import random_params as _random_params
from layer_checks import scratch as _scratch
import numpy_reference
from lstm_jax import cells
from lstm_jax.cells import lstm
from lstm_jax.models import linen_layers as linen


def _forms(name):
  """Each form as ``run(params, xs_BTI) -> (carry, outputs_BTH)`` taking the family's plain params."""
  family = cells.get_family(name)
  rnn = nn.RNN(linen.RecurrentCell(H, cell=name), return_carry=True)
  layer = linen.RecurrentLayer(H, cell=name)
  time_major = linen.RecurrentLayer(H, cell=name, time_major=True)

  def run_time_major(p, xs):
    carry, outputs = time_major.apply({"params": p}, jnp.swapaxes(xs, 0, 1))
    return carry, jnp.swapaxes(outputs, 0, 1)

  return {"scratch": lambda p, xs: _scratch(family, p, xs),
          "cell_under_nn_RNN": lambda p, xs: rnn.apply({"params": {"cell": p}}, xs),
          "layer": lambda p, xs: layer.apply({"params": p}, xs),
          "layer_time_major": run_time_major}


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_linen_params_are_the_family_pytree(name):
  family = cells.get_family(name)
  xs = _inputs()
  expected = jax.tree.map(jnp.shape, family.init_params(jax.random.key(0), IN, H, "d2l"))
  rnn_vars = nn.RNN(linen.RecurrentCell(H, cell=name)).init(jax.random.key(1), xs)
  layer_vars = linen.RecurrentLayer(H, cell=name).init(jax.random.key(1), xs)
  assert jax.tree.map(jnp.shape, dict(rnn_vars)) == {"params": {"cell": expected}}
  assert jax.tree.map(jnp.shape, dict(layer_vars)) == {"params": expected}


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_all_forms_agree_on_outputs_carry_and_gradients(name):
  params, xs = _random_params(cells.get_family(name)), _inputs()
  forms = _forms(name)
  want_carry, want_outputs = forms["scratch"](params, xs)
  want_grads = jax.grad(lambda p, x: _loss(*forms["scratch"](p, x)), argnums=(0, 1))(params, xs)
  assert np.abs(np.asarray(want_grads[1])).max() > 1e-3
  for form_name, run in forms.items():
    carry, outputs = run(params, xs)
    assert type(carry) is type(want_carry), form_name
    np.testing.assert_allclose(outputs, want_outputs, **TOL, err_msg=form_name)
    _assert_trees_close(carry, want_carry)
    grads = jax.grad(lambda p, x: _loss(*run(p, x)), argnums=(0, 1))(params, xs)
    _assert_trees_close(grads, want_grads)


def test_lstm_cell_under_nn_RNN_matches_numpy_reference():
  params, xs = numpy_reference.random_lstm_params(1, IN, H), _inputs()
  carry, outputs = nn.RNN(linen.RecurrentCell(H), return_carry=True).apply({"params": {"cell": params}}, xs)
  hs_ref, h_ref, c_ref = numpy_reference.lstm_layer(params, np.swapaxes(xs, 0, 1))
  assert isinstance(carry, lstm.LSTMCarry)
  np.testing.assert_allclose(outputs, np.swapaxes(hs_ref, 0, 1), **TOL)
  np.testing.assert_allclose(carry.h, h_ref, **TOL)
  np.testing.assert_allclose(carry.c, c_ref, **TOL)


def test_given_initial_carry_is_used_by_cell_and_layer():
  params, xs = numpy_reference.random_lstm_params(1, IN, H), _inputs()
  carry0 = lstm.LSTMCarry(h=jnp.asarray(_inputs(2, (B, H))), c=jnp.asarray(_inputs(3, (B, H))))
  want_carry, want_outputs = _scratch(lstm, params, xs, carry0)
  rnn = nn.RNN(linen.RecurrentCell(H), return_carry=True)
  for carry, outputs in (rnn.apply({"params": {"cell": params}}, xs, initial_carry=carry0),
                         linen.RecurrentLayer(H).apply({"params": params}, xs, carry0)):
    np.testing.assert_allclose(outputs, want_outputs, **TOL)
    _assert_trees_close(carry, want_carry)
  zero_carry, _ = _scratch(lstm, params, xs)
  assert np.abs(np.asarray(zero_carry.c - want_carry.c)).max() > 1e-3  # the initial carry mattered


def test_initialize_carry_is_the_family_zero_carry():
  cell, layer = linen.RecurrentCell(H), linen.RecurrentLayer(H)
  want = lstm.zero_carry(B, H)
  _assert_trees_close(cell.initialize_carry(jax.random.key(0), (B, IN)), want)
  _assert_trees_close(layer.initialize_carry(jax.random.key(0), (B, T, IN)), want)
  extra_batch_dims = cell.initialize_carry(jax.random.key(0), (2, B, IN))
  assert extra_batch_dims.h.shape == extra_batch_dims.c.shape == (2, B, H)


@pytest.mark.parametrize("unroll", [1, 4])
def test_unroll_gives_the_same_results(unroll):
  params, xs = numpy_reference.random_lstm_params(1, IN, H), _inputs()
  want_carry, want_outputs = _scratch(lstm, params, xs)
  for module, variables in ((linen.RecurrentLayer(H, unroll=unroll), {"params": params}),
                            (nn.RNN(linen.RecurrentCell(H), return_carry=True, unroll=unroll),
                             {"params": {"cell": params}})):
    carry, outputs = module.apply(variables, xs)
    np.testing.assert_allclose(outputs, want_outputs, rtol=1e-6, atol=1e-7)
    _assert_trees_close(carry, want_carry, rtol=1e-6, atol=1e-7)


def test_jit_equals_eager():
  params, xs = numpy_reference.random_lstm_params(1, IN, H), _inputs()
  layer = linen.RecurrentLayer(H)
  eager = layer.apply({"params": params}, xs)
  jitted = jax.jit(layer.apply)({"params": params}, xs)
  _assert_trees_close(jitted, eager)


def test_init_scheme_and_forget_bias_reach_the_params():
  hidden = 16
  variables = linen.RecurrentLayer(hidden, init_scheme="d2l", forget_bias=1.0).init(jax.random.key(0), _inputs())
  b = np.asarray(variables["params"]["b"])
  np.testing.assert_array_equal(b[hidden:2 * hidden], 1.0)
  np.testing.assert_array_equal(np.delete(b, np.s_[hidden:2 * hidden]), 0.0)
  assert abs(float(jnp.std(variables["params"]["W_h"])) - 0.01) < 0.002
  bound = 1.0 / np.sqrt(hidden)
  pytorch = nn.RNN(linen.RecurrentCell(hidden, init_scheme="pytorch")).init(jax.random.key(0), _inputs())
  W_h = np.asarray(pytorch["params"]["cell"]["W_h"])
  assert bound * 0.9 < np.abs(W_h).max() <= bound


def _elman_family():
  """A tanh RNN family defined here, with no forget gate, to show the modules are generic over families."""
  def init_params(key, input_size, hidden_size, scheme="d2l"):
    k_x, k_h = jax.random.split(key)
    return {"W_x": 0.01 * jax.random.normal(k_x, (input_size, hidden_size)),
            "W_h": 0.01 * jax.random.normal(k_h, (hidden_size, hidden_size)), "b": jnp.zeros(hidden_size)}

  def project_inputs(params, xs_TBI):
    return xs_TBI @ params["W_x"] + params["b"]

  def recurrence(params, xproj_TBH, carry, unroll=1):
    def body(h, xproj):
      h = jnp.tanh(xproj + h @ params["W_h"])
      return h, h
    return jax.lax.scan(body, carry, xproj_TBH, unroll=unroll)

  def step(params, carry, x_BI):
    h = jnp.tanh(x_BI @ params["W_x"] + params["b"] + carry @ params["W_h"])
    return h, h

  return types.SimpleNamespace(init_params=init_params, zero_carry=lambda batch, hidden: jnp.zeros((batch, hidden)),
                               project_inputs=project_inputs, recurrence=recurrence, step=step)


def test_a_newly_registered_family_works_without_changes(monkeypatch):
  family = _elman_family()
  monkeypatch.setitem(cells.REGISTRY, "elman_for_test", cells.Family("elman_for_test", family, num_gates=1))
  monkeypatch.setitem(cells.FAMILIES, "elman_for_test", family)
  params = {"W_x": _inputs(1, (IN, H)), "W_h": _inputs(2, (H, H)), "b": _inputs(3, (H,))}
  xs = _inputs()
  want_h = np.zeros((B, H))
  for t in range(T):
    want_h = np.tanh(xs[:, t] @ params["W_x"] + params["b"] + want_h @ params["W_h"])
  for form_name, run in _forms("elman_for_test").items():
    carry, outputs = run(params, xs)
    np.testing.assert_allclose(carry, want_h, **TOL, err_msg=form_name)
    np.testing.assert_allclose(outputs[:, -1], want_h, **TOL, err_msg=form_name)
  with pytest.raises(ValueError, match="forget_bias"):
    linen.RecurrentLayer(H, cell="elman_for_test", forget_bias=1.0).init(jax.random.key(0), xs)


def test_bad_configuration_is_a_clear_error():
  xs = _inputs()
  with pytest.raises(ValueError, match="Unknown cell"):
    linen.RecurrentLayer(H, cell="transformer").init(jax.random.key(0), xs)
  with pytest.raises(ValueError, match=r"\[batch, time, features\]"):
    linen.RecurrentLayer(H).init(jax.random.key(0), xs[0])
  variables = linen.RecurrentLayer(H).init(jax.random.key(0), xs)
  with pytest.raises(Exception, match="W_x"):  # Flax names the parameter whose shape does not fit the input
    linen.RecurrentLayer(H).apply(variables, _inputs(shape=(B, T, IN + 1)))
