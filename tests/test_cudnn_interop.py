"""The cuDNN weight converters (lstm_jax.interop.cudnn): an exact round trip, our stacked LSTM against
jax.experimental.rnn.lstm_ref on converted weights (and the float64 NumPy reference), and the clear error of the
cuDNN path on machines without CUDA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn as jrnn

import numpy_reference
from lstm_jax.interop import cudnn

B, T, IN, H, LAYERS = 3, 6, 5, 4, 2
TOL = dict(rtol=1e-5, atol=1e-5)


def _layers(seed=0):
  """Two layers (``in -> H``, ``H -> H``) with N(0, 0.25) entries, biases included."""
  return tuple({k: jnp.asarray(v) for k, v in numpy_reference.random_lstm_params(seed + k, n_in, H).items()}
               for k, n_in in enumerate((IN,) + (H,) * (LAYERS - 1)))


def _inputs(seed=0):
  """``xs [B, T, in]``, ``h0, c0 [layers, B, H]``."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
  return normal(B, T, IN), normal(LAYERS, B, H), normal(LAYERS, B, H)


def test_round_trip_is_exact_and_layout_matches_jax():
  layers = _layers()
  flat = cudnn.to_cudnn(layers)
  assert flat.shape == (cudnn.num_params(IN, H, LAYERS),)
  back = cudnn.from_cudnn(flat, input_size=IN, hidden_size=H, num_layers=LAYERS)
  for ours, theirs in zip(layers, back):
    for name in ("W_x", "W_h", "b"):
      np.testing.assert_array_equal(theirs[name], ours[name], err_msg=name)
  W_ih, W_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(flat, IN, H, LAYERS, False)
  np.testing.assert_array_equal(W_ih[1], layers[1]["W_x"].T)  # [4H, in] rows are gate units
  np.testing.assert_array_equal(b_ih[0], layers[0]["b"])
  np.testing.assert_array_equal(b_hh[0], jnp.zeros(4 * H))
  np.testing.assert_array_equal(cudnn.to_cudnn(back), flat)


def test_from_cudnn_sums_both_biases_and_checks_length():
  flat = jax.random.normal(jax.random.key(0), (cudnn.num_params(IN, H, LAYERS),))
  _, _, b_ih, b_hh = jrnn.unpack_lstm_weights(flat, IN, H, LAYERS, False)
  ours = cudnn.from_cudnn(flat, input_size=IN, hidden_size=H, num_layers=LAYERS)
  np.testing.assert_array_equal(ours[1]["b"], b_ih[1] + b_hh[1])
  with pytest.raises(ValueError, match="expected"):
    cudnn.from_cudnn(flat[:-1], input_size=IN, hidden_size=H, num_layers=LAYERS)


def test_scratch_layers_equal_lstm_ref_on_converted_weights():
  layers = _layers()
  xs, h0, c0 = _inputs()
  ours = cudnn.scratch_layers(layers, xs, h0, c0)
  ref = cudnn.reference_layers(cudnn.to_cudnn(layers), xs, h0, c0, input_size=IN, hidden_size=H,
                               num_layers=LAYERS)
  for name, a, e in zip(("ys [B, T, H]", "h_n", "c_n"), ours, ref):
    assert a.shape == e.shape, name
    np.testing.assert_allclose(a, e, **TOL, err_msg=name)
  # and layer 0 against the float64 NumPy reference (time-major there)
  hs, h_T, c_T = numpy_reference.lstm_layer(layers[0], np.swapaxes(np.asarray(xs), 0, 1), h0[0], c0[0])
  np.testing.assert_allclose(ref[1][0], h_T, **TOL)
  np.testing.assert_allclose(ref[2][0], c_T, **TOL)
  # a conversion with the gate blocks of W_h in the wrong order is caught
  swapped = tuple(dict(p, W_h=jnp.roll(p["W_h"], H, axis=1)) for p in layers)
  bad = cudnn.reference_layers(cudnn.to_cudnn(swapped), xs, h0, c0, input_size=IN, hidden_size=H,
                               num_layers=LAYERS)
  assert float(jnp.abs(bad[0] - ours[0]).max()) > 1e-2


@pytest.mark.skipif(cudnn.cudnn_available(), reason="a CUDA GPU is present")
def test_layers_raises_a_clear_error_without_cuda():
  xs, h0, c0 = _inputs()
  assert not cudnn.cudnn_available()
  with pytest.raises(RuntimeError, match=r"needs a CUDA GPU.*'scan', 'fused_vjp' or 'pallas'.*'flax_optimized'"):
    cudnn.layers(cudnn.to_cudnn(_layers()), xs, h0, c0, input_size=IN, hidden_size=H, num_layers=LAYERS)
