"""The scratch fused LSTM: against an independent NumPy loop, finite differences, causality, unroll, jit, init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util

import numpy_reference
from lstm_jax.cells import lstm
from lstm_jax.models import scratch as model_lib

T, B, IN, H = 6, 3, 5, 4
TOL = dict(rtol=1e-5, atol=1e-6)


def _inputs(seed=0, shape=(T, B, IN), dtype=np.float32):
  return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.fixture
def params():
  return numpy_reference.random_lstm_params(seed=1, input_size=IN, hidden_size=H)


def test_layer_matches_numpy_reference_from_zero_carry(params):
  xs = _inputs()
  carry, hs = lstm.layer(params, xs)
  hs_ref, h_ref, c_ref = numpy_reference.lstm_layer(params, xs)
  np.testing.assert_allclose(hs, hs_ref, **TOL)
  np.testing.assert_allclose(carry.h, h_ref, **TOL)
  np.testing.assert_allclose(carry.c, c_ref, **TOL)
  assert np.abs(carry.c - carry.h).max() > 1e-2  # h and c are not swapped by accident


def test_layer_matches_numpy_reference_from_given_carry(params):
  xs = _inputs()
  h0, c0 = _inputs(2, (B, H)), _inputs(3, (B, H))
  carry, hs = lstm.layer(params, xs, lstm.LSTMCarry(h=jnp.asarray(h0), c=jnp.asarray(c0)))
  hs_ref, h_ref, c_ref = numpy_reference.lstm_layer(params, xs, h0, c0)
  np.testing.assert_allclose(hs, hs_ref, **TOL)
  np.testing.assert_allclose(carry.h, h_ref, **TOL)
  np.testing.assert_allclose(carry.c, c_ref, **TOL)


def test_step_loop_equals_layer(params):
  xs = _inputs()
  carry = lstm.zero_carry(B, H)
  hs = []
  for x in xs:
    carry, h = lstm.step(params, carry, x)
    hs.append(h)
  layer_carry, layer_hs = lstm.layer(params, xs)
  np.testing.assert_allclose(np.stack(hs), layer_hs, **TOL)
  np.testing.assert_allclose(carry.c, layer_carry.c, **TOL)


def test_unroll_does_not_change_results(params):
  xs = _inputs()
  loss = lambda p, x, unroll: jnp.sum(lstm.layer(p, x, unroll=unroll)[1] ** 2)
  (carry1, hs1), (carry4, hs4) = lstm.layer(params, xs, unroll=1), lstm.layer(params, xs, unroll=4)
  np.testing.assert_allclose(hs1, hs4, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(carry1.c, carry4.c, rtol=1e-6, atol=1e-7)
  grads1 = jax.grad(loss, argnums=(0, 1))(params, xs, 1)
  grads4 = jax.grad(loss, argnums=(0, 1))(params, xs, 4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), grads1, grads4)


def test_jit_equals_eager(params):
  xs = _inputs()
  eager_carry, eager_hs = lstm.layer(params, xs)
  jit_carry, jit_hs = jax.jit(lstm.layer, static_argnames="unroll")(params, xs)
  np.testing.assert_allclose(jit_hs, eager_hs, **TOL)
  np.testing.assert_allclose(jit_carry.c, eager_carry.c, **TOL)


def test_gradients_match_float64_finite_differences():
  with jax.enable_x64(True):
    params = numpy_reference.random_lstm_params(seed=4, input_size=3, hidden_size=2, dtype=np.float64)
    xs = _inputs(5, (4, 2, 3), np.float64)
    carry = lstm.LSTMCarry(h=jnp.asarray(_inputs(6, (2, 2), np.float64)), c=jnp.asarray(_inputs(7, (2, 2), np.float64)))
    assert lstm.layer(params, xs, carry)[1].dtype == jnp.float64
    test_util.check_grads(lambda p, x, c: lstm.layer(p, x, c), (params, xs, carry), order=1, modes=("rev",),
                          atol=1e-6, rtol=1e-6)
  assert jnp.zeros(1).dtype == jnp.float32  # the context did not leak


def test_output_at_time_t_depends_only_on_inputs_up_to_t_of_its_own_sequence(params):
  xs = _inputs()
  jacobian = jax.jacrev(lambda x: lstm.layer(params, x)[1])(xs)  # [T, B, H, T, B, in]
  sensitivity = np.abs(np.asarray(jacobian)).sum(axis=(2, 5))      # [t_out, b_out, t_in, b_in]
  for t in range(T):
    for b in range(B):
      assert np.all(sensitivity[t, b, t + 1:] == 0.0), f"output {t} depends on later inputs"
      assert np.all(sensitivity[t, b, :t + 1, b] > 1e-6), f"output {t} ignores earlier inputs"
      assert np.all(np.delete(sensitivity[t, b], b, axis=1) == 0.0), "batch rows leak into each other"


def test_language_model_one_hot_gather_equals_explicit_one_hot():
  vocab, hidden = 7, 5
  model = model_lib.LanguageModel(vocab_size=vocab, hidden_size=hidden, num_layers=2, init_scheme="pytorch")
  model_params = model.init(jax.random.key(0))
  tokens_BT = jax.random.randint(jax.random.key(1), (B, T), 0, vocab)
  logits_BTV, carry = model.apply(model_params, tokens_BT)

  hs = jax.nn.one_hot(tokens_BT.T, vocab)  # [T, B, V]
  expected_carry = []
  for layer_params in model_params["layers"]:
    layer_carry, hs = lstm.layer(layer_params, hs)
    expected_carry.append(layer_carry)
  expected_logits = np.swapaxes(hs @ model_params["head"]["W"] + model_params["head"]["b"], 0, 1)
  np.testing.assert_allclose(logits_BTV, expected_logits, **TOL)
  for got, want in zip(carry, expected_carry):
    np.testing.assert_allclose(got.h, want.h, **TOL)
    np.testing.assert_allclose(got.c, want.c, **TOL)


def _init(scheme, input_size=32, hidden_size=64, forget_bias=0.0, seed=0):
  return lstm.init_params(jax.random.key(seed), input_size, hidden_size, scheme, forget_bias=forget_bias)


def test_d2l_init_is_small_normal_with_zero_bias():
  p = _init("d2l")
  for name in ("W_x", "W_h"):
    assert abs(float(jnp.std(p[name])) - 0.01) < 0.001, name
    assert abs(float(jnp.mean(p[name]))) < 0.001, name
  assert np.all(p["b"] == 0.0)


def test_pytorch_init_is_uniform_within_one_over_sqrt_hidden():
  hidden = 64
  bound = 1.0 / np.sqrt(hidden)
  p = _init("pytorch", hidden_size=hidden)
  for name, value in p.items():
    value = np.asarray(value)
    assert np.abs(value).max() <= bound, name
    assert np.abs(value).max() > 0.9 * bound, name
    if value.size > 1000:
      assert abs(value.std() - bound / np.sqrt(3)) < 0.05 * bound, name


def test_flax_init_has_orthogonal_recurrent_gate_blocks_and_lecun_input_kernel():
  input_size, hidden = 32, 16
  p = _init("flax", input_size=input_size, hidden_size=hidden)
  for block in np.split(np.asarray(p["W_h"]), 4, axis=1):
    np.testing.assert_allclose(block.T @ block, np.eye(hidden), atol=1e-5)
  assert abs(float(jnp.std(p["W_x"])) - 1 / np.sqrt(input_size)) < 0.1 / np.sqrt(input_size)
  assert np.all(p["b"] == 0.0)


@pytest.mark.parametrize("scheme", ["d2l", "pytorch", "flax"])
def test_forget_bias_shifts_only_the_forget_block(scheme):
  hidden = 8
  base = _init(scheme, hidden_size=hidden, forget_bias=0.0)
  shifted = _init(scheme, hidden_size=hidden, forget_bias=1.0)
  expected_shift = np.zeros(4 * hidden, np.float32)
  expected_shift[hidden:2 * hidden] = 1.0  # blocks i, f, g, o
  np.testing.assert_allclose(shifted["b"] - base["b"], expected_shift, atol=1e-6)
  np.testing.assert_array_equal(shifted["W_x"], base["W_x"])
  np.testing.assert_array_equal(shifted["W_h"], base["W_h"])


def test_unknown_init_scheme_is_a_clear_error():
  with pytest.raises(ValueError, match="init scheme"):
    _init("glorot")
