"""Converters to Flax's LSTM cells: real Flax trees, lossless round trips, and equal outputs, carry and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpy_reference
from layer_checks import assert_trees_close as _assert_trees_close
from lstm_jax.cells import lstm
from lstm_jax.interop import flax as flax_interop
from lstm_jax.models import linen_layers as linen

B, T, IN, H = 3, 6, 5, 4
TOL = dict(rtol=1e-5, atol=1e-6)
FLAX_CELLS = {"LSTMCell": nn.LSTMCell, "OptimizedLSTMCell": nn.OptimizedLSTMCell}


def _inputs(seed=0, shape=(B, T, IN)):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _flax_params(cell_class, seed=0):
  """A real Flax cell's params, with non-zero biases so that a misplaced bias shows."""
  cell = cell_class(H, bias_init=nn.initializers.normal(0.5))
  return nn.RNN(cell).init(jax.random.key(seed), _inputs())["params"]["cell"]


def _assert_trees_equal(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  jax.tree.map(np.testing.assert_array_equal, got, want)


def _loss(carry, outputs):
  return jnp.sum(jnp.sin(3.0 * outputs)) + jnp.sum(carry.h ** 2) + jnp.sum(jnp.cos(carry.c))


@pytest.mark.parametrize("cell_name", sorted(FLAX_CELLS))
def test_converted_tree_has_the_real_flax_structure(cell_name):
  flax_params = _flax_params(FLAX_CELLS[cell_name])
  ours = numpy_reference.random_lstm_params(1, IN, H)
  assert jax.tree.map(jnp.shape, flax_interop.to_flax_lstm(ours)) == jax.tree.map(jnp.shape, dict(flax_params))


@pytest.mark.parametrize("cell_name", sorted(FLAX_CELLS))
def test_round_trips_are_the_identity(cell_name):
  flax_params = _flax_params(FLAX_CELLS[cell_name])
  _assert_trees_equal(flax_interop.to_flax_lstm(flax_interop.from_flax_lstm(flax_params)), dict(flax_params))
  ours = numpy_reference.random_lstm_params(1, IN, H)
  _assert_trees_equal(flax_interop.from_flax_lstm(flax_interop.to_flax_lstm(ours)), ours)


def test_gate_blocks_land_on_the_named_flax_gates():
  ours = numpy_reference.random_lstm_params(1, IN, H)
  flax_params = flax_interop.to_flax_lstm(ours)
  for k, gate in enumerate("ifgo"):
    cols = slice(k * H, (k + 1) * H)
    np.testing.assert_array_equal(flax_params["i" + gate]["kernel"], ours["W_x"][:, cols])
    np.testing.assert_array_equal(flax_params["h" + gate]["kernel"], ours["W_h"][:, cols])
    np.testing.assert_array_equal(flax_params["h" + gate]["bias"], ours["b"][cols])


def test_carry_converters_swap_h_and_c_and_round_trip():
  carry = lstm.LSTMCarry(h=jnp.asarray(_inputs(2, (B, H))), c=jnp.asarray(_inputs(3, (B, H))))
  c, h = flax_interop.carry_to_flax(carry)
  np.testing.assert_array_equal(c, carry.c)
  np.testing.assert_array_equal(h, carry.h)
  _assert_trees_equal(flax_interop.carry_from_flax(flax_interop.carry_to_flax(carry)), carry)
  assert isinstance(flax_interop.carry_from_flax((c, h)), lstm.LSTMCarry)


@pytest.mark.parametrize("cell_name", sorted(FLAX_CELLS))
def test_flax_cells_equal_scratch_linen_and_numpy_given_the_same_weights(cell_name):
  params, xs = numpy_reference.random_lstm_params(1, IN, H), _inputs()
  carry0 = lstm.LSTMCarry(h=jnp.asarray(_inputs(2, (B, H))), c=jnp.asarray(_inputs(3, (B, H))))
  flax_rnn = nn.RNN(FLAX_CELLS[cell_name](H), return_carry=True)

  def run_flax(p, x):
    flax_carry, outputs = flax_rnn.apply({"params": {"cell": flax_interop.to_flax_lstm(p)}}, x,
                                         initial_carry=flax_interop.carry_to_flax(carry0))
    return flax_interop.carry_from_flax(flax_carry), outputs

  def run_scratch(p, x):
    carry, hs_TBH = lstm.layer(p, jnp.swapaxes(x, 0, 1), carry0)
    return carry, jnp.swapaxes(hs_TBH, 0, 1)

  def run_linen_cell(p, x):
    return nn.RNN(linen.RecurrentCell(H), return_carry=True).apply({"params": {"cell": p}}, x, initial_carry=carry0)

  def run_linen_layer(p, x):
    return linen.RecurrentLayer(H).apply({"params": p}, x, carry0)

  want_carry, want_outputs = run_scratch(params, xs)
  hs_ref, h_ref, c_ref = numpy_reference.lstm_layer(params, np.swapaxes(xs, 0, 1), carry0.h, carry0.c)
  np.testing.assert_allclose(want_outputs, np.swapaxes(hs_ref, 0, 1), **TOL)
  _assert_trees_close(want_carry, lstm.LSTMCarry(h=h_ref, c=c_ref))

  want_grads = jax.grad(lambda p, x: _loss(*run_scratch(p, x)), argnums=(0, 1))(params, xs)
  for run in (run_flax, run_linen_cell, run_linen_layer):
    carry, outputs = run(params, xs)
    np.testing.assert_allclose(outputs, want_outputs, **TOL)
    _assert_trees_close(carry, want_carry)
    _assert_trees_close(jax.grad(lambda p, x: _loss(*run(p, x)), argnums=(0, 1))(params, xs), want_grads)


@pytest.mark.parametrize("cell_name", sorted(FLAX_CELLS))
def test_flax_gradients_convert_to_ours(cell_name):
  """Gradients taken in Flax's own layout, converted with from_flax_lstm, equal our gradients."""
  flax_params, xs = _flax_params(FLAX_CELLS[cell_name]), _inputs()
  flax_rnn = nn.RNN(FLAX_CELLS[cell_name](H), return_carry=True)

  def flax_loss(fp):
    flax_carry, outputs = flax_rnn.apply({"params": {"cell": fp}}, xs)
    return _loss(flax_interop.carry_from_flax(flax_carry), outputs)

  def our_loss(p):
    carry, hs_TBH = lstm.layer(p, jnp.swapaxes(xs, 0, 1))
    return _loss(carry, jnp.swapaxes(hs_TBH, 0, 1))

  ours = flax_interop.from_flax_lstm(flax_params)
  np.testing.assert_allclose(flax_loss(flax_params), our_loss(ours), **TOL)
  _assert_trees_close(flax_interop.from_flax_lstm(jax.grad(flax_loss)(flax_params)), jax.grad(our_loss)(ours))


def test_wrong_trees_are_clear_errors():
  ours = numpy_reference.random_lstm_params(1, IN, H)
  with pytest.raises(ValueError, match="W_x"):
    flax_interop.to_flax_lstm({"kernel": ours["W_x"]})
  with pytest.raises(ValueError, match="4H"):
    flax_interop.to_flax_lstm({**ours, "b": ours["b"][:-1]})
  flax_params = _flax_params(nn.LSTMCell)
  with pytest.raises(ValueError, match=r"variables\['params'\]\['cell'\]"):
    flax_interop.from_flax_lstm({"params": {"cell": flax_params}})
  with pytest.raises(ValueError, match="hi"):
    flax_interop.from_flax_lstm({"ii": flax_params["ii"]})
