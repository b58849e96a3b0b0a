"""The Pallas kernels against their references, in interpret mode (on a GPU, ``launch/gpu_check.sh``, the GPU layout
runs compiled), for every cell with a kernel (lstm, rnn, gru_reset_after; references: the hand-written backwards of
lstm_fused_vjp and rnn_fused_vjp, autodiff of the reset-after GRU's scan): outputs, final carry and the gradients
w.r.t. W_h, the recurrent bias b_hn (GRU), xproj and the initial carry, at shapes that are not tile multiples,
tile-aligned ones and ones that need several hidden tiles, in the GPU (Triton) and TPU (Mosaic) layouts; however
the sequence is cut into time chunks; bfloat16 dot operands; the members axis; the whole language model against
recurrence="scan". Then the persistent GPU LSTM (``lstm_jax.kernels.lstm_persistent``) over its grid (T, P), where
every program of step t finishes before step t + 1 starts (what the grid barrier means), against lstm_fused_vjp and
the float64 NumPy LSTM. Lowering: test_kernel_lowering.py; layout, plan and envelope: test_kernel_envelope.py;
several devices: test_kernel_sharded.py; compiles for real chips: test_kernel_compile.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernel_problems import (BF16_TOL, CELL_NAMES, CELLS, CHUNK_TOL, TOL, assert_no_gradient_zero, assert_same,
                             kernel, problem, value_and_grads)
from lstm_jax.cells import lstm_fused_vjp
from lstm_jax.kernels import layout as layout_lib
from lstm_jax.kernels import lstm_persistent
from lstm_jax.models import scratch as model_lib
from lstm_jax.train import loss as loss_lib
from tests import numpy_reference


@functools.lru_cache
def _expected(cell, T, B, H, K=None):
  """The reference's ``value_and_grads`` (over the members with ``jax.vmap`` when K is set), computed once."""
  reference = CELLS[cell].reference if K is None else jax.vmap(CELLS[cell].reference)
  return value_and_grads(reference, *problem(cell, T, B, H, K))


# ----------------------------------------------------------------------------------------------------------------
# Layouts: padding, tiles, batch blocks, members.
# ----------------------------------------------------------------------------------------------------------------

LAYOUTS = {  # name: T, B, H, K, backend
    "unaligned": (7, 3, 20, None, "triton"),       # not tile multiples: B 3 -> 16, H 20 -> 32 per gate block
    "unaligned-tpu": (7, 3, 20, None, "tpu"),      # B 3 -> 8, H 20 -> 128 per gate block
    "aligned": (4, 16, 128, None, "triton"),       # tile-aligned, no padding
    "aligned-tpu": (4, 8, 128, None, "tpu"),       # tile-aligned, no padding
    "aligned-members": (4, 16, 128, 2, "triton"),  # no padding; K = 2 members as a grid axis
    "two-tiles": (3, 20, 130, None, "triton"),     # H 130 -> 256: two 128-wide tiles per gate block (b_hn sliced per
                                                    # tile), two batch blocks
    "members-tpu": (4, 3, 20, 2, "tpu"),            # padded members on the TPU layout
}
# Each cell's layouts in the default run (2-6 s each in interpret mode); the others are marked slow.
FAST_LAYOUTS = {"lstm": ("unaligned", "unaligned-tpu", "aligned", "aligned-tpu", "two-tiles"),
                "rnn": ("unaligned", "aligned-members"), "gru_reset_after": ("unaligned", "aligned-members")}


def _layout_cases():
  return [pytest.param(cell, *LAYOUTS[name], id=f"{cell}-{name}",
                       marks=() if name in FAST_LAYOUTS[cell] else pytest.mark.slow)
          for cell in CELL_NAMES for name in LAYOUTS]


@pytest.mark.parametrize("cell, T, B, H, K, backend", _layout_cases())
def test_float32_equals_reference(cell, T, B, H, K, backend):
  """With K, ``recurrence`` dispatches on ``W_h.ndim == 3`` to ``population_recurrence`` (one pallas_call, K a grid
  axis) and the reference is mapped over the members."""
  expected = _expected(cell, T, B, H, K)
  actual = value_and_grads(kernel(cell, backend), *problem(cell, T, B, H, K))
  assert_same(actual, expected, TOL)
  assert_no_gradient_zero(expected)
  if K is not None:
    assert float(jnp.abs(actual[0][1][0] - actual[0][1][1]).max()) > 1e-2  # members really differ


@pytest.mark.parametrize("cell, backend", [pytest.param(cell, backend, id=f"{cell}-{backend}", marks=(
    pytest.mark.slow if cell != "lstm" and backend == "tpu" else ())) for cell in CELL_NAMES for backend in
    ("triton", "tpu")])
def test_bfloat16_matmul_close_to_float32(cell, backend):
  actual = value_and_grads(kernel(cell, backend, jnp.bfloat16), *problem(cell, 7, 3, 20))
  expected = _expected(cell, 7, 3, 20)
  assert_same(actual, expected, BF16_TOL)
  assert float(jnp.abs(actual[0][1] - expected[0][1]).max()) > 1e-4  # the dots really ran in bfloat16
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(actual))


@pytest.mark.parametrize("cell", [pytest.param(cell, marks=() if cell == "lstm" else pytest.mark.slow)
                                  for cell in CELL_NAMES])
def test_members_axis_equals_loop_of_single_calls(cell):
  K = 2
  params, xproj, carry = problem(cell, 4, 3, 20, K=K)
  module = CELLS[cell].module
  population = value_and_grads(module.population_recurrence, params, xproj, carry)  # the members' losses summed
  via_recurrence = jax.jit(module.recurrence)(params, xproj, carry)  # dispatches on W_h.ndim == 3
  np.testing.assert_array_equal(via_recurrence[1], population[0][1])
  single = jax.jit(functools.partial(value_and_grads, module.recurrence))
  member = lambda k: jax.tree.map(lambda a: a[k], (params, xproj, carry))
  singles = [single(*member(k)) for k in range(K)]
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *singles)
  assert_same(population, stacked, dict(rtol=1e-6, atol=1e-6))
  assert float(jnp.abs(population[0][1][0] - population[0][1][1]).max()) > 1e-2  # members really differ


# ----------------------------------------------------------------------------------------------------------------
# Time chunks (TPU layout: chunks hand the state on through the VMEM scratch) and rolled hidden-tile loops (GPU).
# ----------------------------------------------------------------------------------------------------------------

def _assert_equal_to_reference(cell, T, B, H, K=None, backend="tpu", matmul_dtype=jnp.float32, tol=CHUNK_TOL):
  actual = value_and_grads(kernel(cell, backend, matmul_dtype), *problem(cell, T, B, H, K))
  expected = _expected(cell, T, B, H, K)
  assert_same(actual, expected, tol)
  assert_no_gradient_zero(expected)


@pytest.fixture
def chunk_of(monkeypatch):
  """Forces the TPU layout's time chunk to ``Tc`` steps (padding T up to a multiple of it)."""
  layout = layout_lib.layout

  def force(Tc):
    def chunked(backend, kernel, T, B, H, matmul_dtype=jnp.float32):
      lay = layout(backend, kernel, T, B, H, matmul_dtype)
      return lay._replace(Tc=Tc, Tp=layout_lib.round_up(T, Tc)) if backend == "tpu" else lay
    monkeypatch.setattr(layout_lib, "layout", chunked)

  return force


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("T, Tc", [
    (7, 3),   # T not a multiple of Tc: chunks of 3, 3 and 1 step (2 padded steps never computed)
    (5, 8),   # T < Tc: one chunk, 3 padded steps
    (6, 6),   # a single full chunk
    (4, 1),   # one step per chunk: the state crosses a chunk boundary after every step
])
def test_chunked_kernel_equals_reference(chunk_of, cell, T, Tc):
  chunk_of(Tc)
  _assert_equal_to_reference(cell, T, B=3, H=20)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_hidden_tiles_walked_by_rolled_loops(cell):
  """GPU layout: H 300 -> 512 units per gate, four 128-wide tiles; batch 20 -> two blocks of 16."""
  _assert_equal_to_reference(cell, T=6, B=20, H=300, backend="triton")


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_members_axis_and_bfloat16_dots_with_chunks(chunk_of, cell):
  """K = 2 members in the grid, bfloat16 dot operands, H 130 -> 256 units in one TPU tile, chunks of 2 steps."""
  chunk_of(2)
  _assert_equal_to_reference(cell, T=5, B=4, H=130, K=2, matmul_dtype=jnp.bfloat16, tol=dict(rtol=0, atol=6e-2))


# ----------------------------------------------------------------------------------------------------------------
# The whole model.
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", [pytest.param(cell, marks=() if cell != "lstm" else pytest.mark.slow)
                                  for cell in CELL_NAMES])
def test_language_model_with_pallas_equals_scan(cell):
  """Loss and gradients of every parameter (embedding, W_x, b, W_h, b_hn, head) of a one-layer model."""
  tokens = jax.random.randint(jax.random.key(2), (3, 6), 0, 11)
  model = lambda recurrence: model_lib.LanguageModel(vocab_size=11, hidden_size=16, embed_dim=8, cell=cell,
                                                     recurrence=recurrence)
  params = jax.jit(model("scan").init)(jax.random.key(0))  # jit: one compile instead of many eager ops

  def loss_and_grads(recurrence, p):
    loss = lambda p: jnp.mean(loss_lib.token_nll(model(recurrence).apply(p, tokens[:, :-1])[0], tokens[:, 1:]))
    return jax.value_and_grad(loss)(p)

  both = jax.jit(lambda p: (loss_and_grads("pallas", p), loss_and_grads("scan", p)))
  (pallas_loss, pallas_grads), (scan_loss, scan_grads) = both(params)
  np.testing.assert_allclose(pallas_loss, scan_loss, **TOL)
  assert jax.tree.structure(pallas_grads) == jax.tree.structure(scan_grads)
  for (path, a), e in zip(jax.tree_util.tree_leaves_with_path(pallas_grads), jax.tree.leaves(scan_grads)):
    np.testing.assert_allclose(a, e, **TOL, err_msg=jax.tree_util.keystr(path))


# ----------------------------------------------------------------------------------------------------------------
# The persistent GPU LSTM. Interpret mode plans for a small GPU so that odd shapes get several programs (P = Hp / 16
# here); on a GPU, the device's SMs and the compiled kernels, barrier included.
# ----------------------------------------------------------------------------------------------------------------

SMS = None if jax.default_backend() == "gpu" else 8
OUTPUTS = ("hs", "h_T", "c_T")
GRADIENTS = ("dW_h", "dxproj", "dh0", "dc0")


def _persistent(dtype=jnp.float32):
  return functools.partial(lstm_persistent.recurrence, matmul_dtype=dtype, sms=SMS)


@pytest.mark.parametrize("T, B, H", [(3, 5, 20), (4, 1, 40), (1, 17, 33)])
def test_persistent_equals_the_hand_written_backward_at_odd_shapes(T, B, H):
  args = problem("lstm", T, B, H)
  want, got = (value_and_grads(fn, *args) for fn in (lstm_fused_vjp.recurrence, _persistent()))
  assert_same(got, want, dict(rtol=1e-5, atol=1e-5), OUTPUTS)
  assert_same(got, want, dict(rtol=1e-4, atol=1e-5), GRADIENTS)


def test_persistent_outputs_and_carry_equal_the_float64_numpy_lstm():
  T, B, H = 4, 3, 40
  params, xproj, carry = problem("lstm", T, B, H, seed=3)
  (hT, cT), hs = _persistent()(params, xproj, carry)
  # The NumPy LSTM takes inputs and W_x; an identity W_x over the projected inputs gives the same pre-activations.
  reference = {"W_x": np.eye(4 * H), "W_h": np.asarray(params["W_h"]), "b": np.zeros(4 * H)}
  want_hs, want_h, want_c = numpy_reference.lstm_layer(reference, np.asarray(xproj), np.asarray(carry.h),
                                                       np.asarray(carry.c))
  np.testing.assert_allclose(hs, want_hs, atol=2e-5)
  np.testing.assert_allclose(hT, want_h, atol=2e-5)
  np.testing.assert_allclose(cT, want_c, atol=2e-5)


def test_persistent_bfloat16_matmuls_match_the_hand_written_backward_in_bfloat16():
  args = problem("lstm", 3, 4, 40, seed=5)
  reference = lambda p, x, c: lstm_fused_vjp.recurrence({"W_h": p["W_h"].astype(jnp.bfloat16)}, x, c)
  want, got = (value_and_grads(fn, *args) for fn in (reference, _persistent(jnp.bfloat16)))
  assert_same(got, want, dict(rtol=2e-2, atol=2e-2), OUTPUTS)
  assert_same(got, want, dict(rtol=5e-2, atol=5e-2), GRADIENTS[1:])  # dW_h: the reference's is of bf16 W_h

