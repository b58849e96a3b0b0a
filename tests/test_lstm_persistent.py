"""The persistent GPU LSTM (``lstm_jax.kernels.lstm_persistent``) in interpret mode: its step bodies over the grid
(T, P), where every program of step t finishes before step t + 1 starts (what the grid barrier means), against the
hand-written backward (``lstm_fused_vjp``) and the float64 NumPy LSTM, at odd shapes; and its plan (programs, units
per program, the envelope). On a GPU (``launch/gpu_check.sh``) the same tests run the compiled kernels, barrier
included. The compile checks for an H100 and an A100 are in tests/test_kernel_compile.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax.cells import lstm_fused_vjp
from lstm_jax.cells.lstm import LSTMCarry
from lstm_jax.kernels import lstm_pallas
from lstm_jax.kernels import lstm_persistent
from tests import numpy_reference

ON_GPU = jax.default_backend() == "gpu"
# Interpret mode plans for a small GPU so that odd shapes get several programs (P = Hp / 16 here).
SMS = None if ON_GPU else 8


def _inputs(T, B, H, seed=0):
  k = jax.random.split(jax.random.key(seed), 4)
  W_h = jax.random.normal(k[0], (H, 4 * H)) * (1.0 / np.sqrt(H))
  xproj = jax.random.normal(k[1], (T, B, 4 * H))
  h0, c0 = (jax.random.normal(key, (B, H)) * 0.5 for key in k[2:])
  return W_h, xproj, h0, c0


def _loss(recurrence, W_h, xproj, h0, c0):
  (hT, cT), hs = recurrence({"W_h": W_h}, xproj, LSTMCarry(h0, c0))
  weights = jnp.cos(jnp.arange(hs.size, dtype=jnp.float32)).reshape(hs.shape)  # every output matters differently
  return jnp.sum(hs * weights) + jnp.sum(hT * 1.7) - jnp.sum(cT * 0.3)


def _persistent(dtype=jnp.float32):
  return lambda params, xproj, carry: lstm_persistent.recurrence(params, xproj, carry, matmul_dtype=dtype,
                                                                 sms=SMS)


def _value_and_grads(recurrence, *args):
  return jax.jit(jax.value_and_grad(lambda *a: _loss(recurrence, *a), argnums=(0, 1, 2, 3)))(*args)


@pytest.mark.parametrize("T, B, H", [(3, 5, 20), (4, 1, 40), (1, 17, 33)])
def test_equals_the_hand_written_backward_at_odd_shapes(T, B, H):
  args = _inputs(T, B, H)
  (want, want_grads), (got, got_grads) = (_value_and_grads(fn, *args)
                                          for fn in (lstm_fused_vjp.recurrence, _persistent()))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for g, w, name in zip(got_grads, want_grads, ("W_h", "xproj", "h0", "c0")):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)


def test_outputs_and_carry_equal_the_float64_numpy_lstm():
  T, B, H = 4, 3, 40
  W_h, xproj, h0, c0 = _inputs(T, B, H, seed=3)
  (hT, cT), hs = _persistent()({"W_h": W_h}, xproj, LSTMCarry(h0, c0))
  # The NumPy LSTM takes inputs and W_x; an identity W_x over the projected inputs gives the same pre-activations.
  params = {"W_x": np.eye(4 * H), "W_h": np.asarray(W_h), "b": np.zeros(4 * H)}
  want_hs, want_h, want_c = numpy_reference.lstm_layer(params, np.asarray(xproj), np.asarray(h0), np.asarray(c0))
  np.testing.assert_allclose(hs, want_hs, atol=2e-5)
  np.testing.assert_allclose(hT, want_h, atol=2e-5)
  np.testing.assert_allclose(cT, want_c, atol=2e-5)


def test_bfloat16_matmuls_match_the_hand_written_backward_in_bfloat16():
  args = _inputs(3, 4, 40, seed=5)
  reference = lambda p, x, c: lstm_fused_vjp.recurrence(
      {"W_h": p["W_h"].astype(jnp.bfloat16)}, x, c)
  (want, want_grads), (got, got_grads) = (_value_and_grads(fn, *args)
                                          for fn in (reference, _persistent(jnp.bfloat16)))
  np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2)
  for g, w in zip(got_grads[1:], want_grads[1:]):
    np.testing.assert_allclose(g, w, rtol=5e-2, atol=5e-2)


def test_the_plan_splits_the_hidden_units_over_at_most_half_the_sms():
  plan = lstm_persistent.plan(100, 64, 512, "float32", sms=132)
  assert (plan.Bp, plan.Hp, plan.U, plan.P) == (64, 512, 16, 32)
  assert plan.resident  # 4 x 512 x 16 float32 = 128 KiB: kept on chip
  assert lstm_persistent.plan(100, 128, 1024, "bfloat16", sms=132).resident  # 128 KiB
  assert not lstm_persistent.plan(100, 128, 1024, "float32", sms=132).resident  # 256 KiB: read from L2 each step
  wide = lstm_persistent.plan(35, 32, 2048, "float32", sms=132)
  assert wide.P <= 66 and wide.U * wide.P == 2048 and wide.U == 32
  a100 = lstm_persistent.plan(35, 32, 2048, "float32", sms=108)
  assert a100.P <= 54


def test_outside_the_envelope_the_batch_blocked_kernels_run():
  assert lstm_persistent.plan(35, 200, 256, sms=132) is None
  assert "batch 200 exceeds" in lstm_persistent.limit(35, 200, 256, sms=132)
  small = lstm_persistent.plan(35, 8, 256, sms=4)  # a small GPU: fewer, wider programs
  assert (small.P, small.U) == (2, 128)
  with pytest.raises(ValueError, match="cannot take this shape"):
    lstm_persistent.recurrence({"W_h": jnp.zeros((256, 1024))}, jnp.zeros((3, 200, 1024)),
                               LSTMCarry(jnp.zeros((200, 256)), jnp.zeros((200, 256))), sms=132)
  assert lstm_pallas.persistent_plan(35, 32, 256) is not None  # the dispatch lstm_pallas uses on a GPU
