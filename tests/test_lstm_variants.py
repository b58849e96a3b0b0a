"""Peephole and coupled-gate LSTMs: scratch == linen (under nn.RNN) == NumPy reference; gradients; the model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util

from lstm_jax import cells
from lstm_jax.models import linen_layers as linen
from lstm_jax.models.scratch import LanguageModel
import numpy_reference

B, T, I, H = 3, 6, 5, 4
VARIANTS = {"lstm_peephole": "peephole", "lstm_coupled": "coupled"}


def _random_params(cell, seed=0):
  """Entries far from any init (peepholes non-zero), so that every term of the equations is exercised."""
  params = cells.get_family(cell).init_params(jax.random.key(seed), I, H, "pytorch")
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(0.6 * rng.standard_normal(v.shape), jnp.float32) for k, v in params.items()}


def _scratch(cell, params, xs_TBI):
  family = cells.get_family(cell)
  return family.recurrence(params, family.project_inputs(params, xs_TBI), family.zero_carry(B, H))


@pytest.mark.parametrize("cell", VARIANTS)
def test_scratch_equals_numpy_reference(cell):
  params = _random_params(cell)
  xs = jax.random.normal(jax.random.key(1), (T, B, I))
  carry, hs = _scratch(cell, params, xs)
  ref_hs, ref_h, ref_c = numpy_reference.lstm_variant_layer(VARIANTS[cell], params, xs)
  np.testing.assert_allclose(hs, ref_hs, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(carry.h, ref_h, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(carry.c, ref_c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", VARIANTS)
def test_variant_differs_from_the_plain_lstm(cell):
  """The variant's extra term really acts: the plain LSTM on the same fused weights gives other outputs."""
  params = _random_params(cell)
  xs = jax.random.normal(jax.random.key(1), (T, B, I))
  _, hs = _scratch(cell, params, xs)
  if cell == "lstm_peephole":
    plain = {k: v for k, v in params.items() if k != "peephole"}
    _, plain_hs = _scratch("lstm", plain, xs)
  else:  # the same i, g, o with an independent forget gate at f = sigmoid(0) = 0.5
    W = lambda w: jnp.concatenate([w[..., :H], jnp.zeros_like(w[..., :H]), w[..., H:]], axis=-1)
    _, plain_hs = _scratch("lstm", {k: W(v) for k, v in params.items()}, xs)
  assert np.max(np.abs(np.asarray(hs) - np.asarray(plain_hs))) > 1e-3


@pytest.mark.parametrize("cell", VARIANTS)
def test_linen_cell_under_nn_rnn_equals_scratch(cell):
  params = _random_params(cell)
  xs = jax.random.normal(jax.random.key(1), (T, B, I))
  rnn = nn.RNN(linen.RecurrentCell(hidden_size=H, cell=cell), return_carry=True)
  variables = rnn.init(jax.random.key(0), jnp.swapaxes(xs, 0, 1))
  assert jax.tree.map(jnp.shape, variables["params"]["cell"]) == jax.tree.map(jnp.shape, params)
  carry, hs_BTH = rnn.apply({"params": {"cell": params}}, jnp.swapaxes(xs, 0, 1))
  ref_carry, ref_hs = _scratch(cell, params, xs)
  np.testing.assert_allclose(jnp.swapaxes(hs_BTH, 0, 1), ref_hs, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(carry.c, ref_carry.c, rtol=1e-5, atol=1e-6)
  layer = linen.RecurrentLayer(hidden_size=H, cell=cell, time_major=True)
  _, layer_hs = layer.apply({"params": params}, xs)
  np.testing.assert_allclose(layer_hs, ref_hs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", VARIANTS)
def test_gradients_match_finite_differences_in_float64(cell):
  with jax.enable_x64():
    params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), _random_params(cell))
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
    family = cells.get_family(cell)

    def loss(params, xs):
      carry = family.zero_carry(B, H, jnp.float64)
      _, hs = family.recurrence(params, family.project_inputs(params, xs), carry)
      return jnp.sum(jnp.sin(hs))

    test_util.check_grads(loss, (params, xs), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_peephole_initialises_as_a_plain_lstm_and_model_trains_each_variant():
  params = cells.get_family("lstm_peephole").init_params(jax.random.key(0), I, H, "d2l", forget_bias=1.0)
  np.testing.assert_array_equal(params["peephole"], 0.0)
  np.testing.assert_array_equal(params["b"][H:2 * H], 1.0)
  assert cells.get_family("lstm_coupled").init_params(jax.random.key(0), I, H)["W_h"].shape == (H, 3 * H)
  tokens = jax.random.randint(jax.random.key(2), (2, 7), 0, 11)
  for cell in VARIANTS:
    model = LanguageModel(vocab_size=11, hidden_size=H, cell=cell, num_layers=2, init_scheme="pytorch")
    params = model.init(jax.random.key(0))
    logits, carry = model.apply(params, tokens)
    assert logits.shape == (2, 7, 11) and carry[1].h.shape == (2, H)
  with pytest.raises(ValueError, match="forget_bias"):
    LanguageModel(vocab_size=11, hidden_size=H, cell="lstm_coupled", forget_bias=1.0).init(jax.random.key(0))
