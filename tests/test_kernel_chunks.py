"""The time-chunked grid of the Pallas kernels (interpret mode): every cell's kernel equals its reference recurrence
(outputs, final carry, every gradient) however the sequence is cut into chunks — T not a multiple of the chunk,
T shorter than the chunk, one chunk, one step per chunk — in the TPU layout (chunks handed on through the VMEM
scratch) and the GPU layout (one chunk, hidden tiles walked by rolled loops), with hidden sizes that are not tile
multiples, bfloat16 dots and a members axis."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax.cells import gru, lstm_fused_vjp, rnn_fused_vjp
from lstm_jax.cells.lstm import LSTMCarry
from lstm_jax.kernels import gru_pallas, lstm_pallas, rnn_pallas
from lstm_jax.kernels import layout as layout_lib

CELLS = {  # kernel module, reference recurrence, gate blocks
    "lstm": (lstm_pallas, lstm_fused_vjp.recurrence, 4),
    "gru_reset_after": (gru_pallas, gru.reset_after.recurrence, 3),
    "rnn": (rnn_pallas, rnn_fused_vjp.recurrence, 1),
}
F32_TOL = dict(rtol=2e-5, atol=2e-5)
BF16_TOL = dict(rtol=0, atol=6e-2)


def _problem(cell, T, B, H, K=0):
  _, _, G = CELLS[cell]
  ks = jax.random.split(jax.random.key(T * 1000 + B * 10 + H), 6)
  lead = (K,) if K else ()
  params = {"W_h": jax.random.normal(ks[0], lead + (H, G * H)) / np.sqrt(H)}
  if cell == "gru_reset_after":
    params["b_hn"] = 0.3 * jax.random.normal(ks[1], lead + (H,))
  xproj = jax.random.normal(ks[2], lead + (T, B, G * H))
  h0 = 0.5 * jax.random.normal(ks[3], lead + (B, H))
  carry = LSTMCarry(h0, 0.5 * jax.random.normal(ks[4], lead + (B, H))) if cell == "lstm" else h0
  return params, xproj, carry


def _value_and_grads(recurrence, params, xproj, carry):
  """Outputs and the gradients of a loss that weighs every output and the final carry differently."""

  def loss(params, xproj, carry):
    final, hs = recurrence(params, xproj, carry)
    weights = jnp.cos(jnp.arange(hs.size, dtype=jnp.float32).reshape(hs.shape))
    return jnp.sum(hs * weights) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final)), (final, hs)

  (_, outputs), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, xproj, carry)
  return outputs, grads


def _assert_equal_to_reference(cell, T, B, H, K=0, backend="tpu", matmul_dtype=jnp.float32, tol=F32_TOL):
  module, reference, _ = CELLS[cell]
  params, xproj, carry = _problem(cell, T, B, H, K)
  interpret = None if backend == "triton" else True  # the GPU layout runs compiled where a GPU is (gpu_check.sh)
  kernel = functools.partial(module.recurrence, matmul_dtype=matmul_dtype, interpret=interpret, backend=backend)
  expected = _value_and_grads(jax.vmap(reference) if K else reference, params, xproj, carry)
  actual = _value_and_grads(kernel, params, xproj, carry)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    assert a.shape == e.shape
    np.testing.assert_allclose(a, e, **tol)
  assert all(float(jnp.abs(g).max()) > 1e-3 for g in jax.tree.leaves(expected[1]))  # no gradient silently zero


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


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("T, Tc", [
    (7, 3),   # T not a multiple of Tc: chunks of 3, 3 and 1 step (2 padded steps never computed)
    (5, 8),   # T < Tc: one chunk, 3 padded steps
    (6, 6),   # a single full chunk
    (4, 1),   # one step per chunk: the state crosses a chunk boundary after every step
])
def test_chunked_kernel_equals_reference(chunk_of, cell, T, Tc):
  chunk_of(Tc)
  _assert_equal_to_reference(cell, T, B=3, H=20)


@pytest.mark.parametrize("cell", list(CELLS))
def test_hidden_tiles_walked_by_rolled_loops(cell):
  """GPU layout: H 300 -> 512 units per gate, four 128-wide tiles; batch 20 -> two blocks of 16."""
  _assert_equal_to_reference(cell, T=6, B=20, H=300, backend="triton")


@pytest.mark.parametrize("cell", list(CELLS))
def test_members_axis_and_bfloat16_dots_with_chunks(chunk_of, cell):
  """K = 2 members in the grid, bfloat16 dot operands, H 130 -> 256 units in one TPU tile, chunks of 2 steps."""
  chunk_of(2)
  _assert_equal_to_reference(cell, T=5, B=4, H=130, K=2, matmul_dtype=jnp.bfloat16, tol=BF16_TOL)


def test_tpu_layout_fits_the_chip_and_evens_out_the_chunks():
  kernel = lstm_pallas.KERNEL
  for vmem in (16 << 20, 64 << 20, 128 << 20):
    for T, B, H in ((35, 32, 256), (100, 64, 512), (1000, 16, 512), (100, 128, 1024)):
      lay = layout_lib.tpu_layout(kernel, T, B, H, jnp.float32, vmem)
      if lay is None:
        continue
      assert lay.vmem <= layout_lib.vmem_budget(vmem)
      assert lay.Tp >= T and lay.Tp - T < lay.num_chunks  # the padding is under one step per chunk
      assert lay.Bp % lay.bB == 0 and lay.bB % 8 == 0 and lay.Hp % 128 == 0
  small = layout_lib.tpu_layout(kernel, 100, 128, 1024, jnp.float32, 64 << 20)
  large = layout_lib.tpu_layout(kernel, 100, 128, 1024, jnp.float32, 128 << 20)
  assert small.bB * small.Tc < large.bB * large.Tc  # more VMEM, bigger blocks
  assert layout_lib.tpu_layout(kernel, 100, 128, 1024, jnp.float32, 16 << 20) is None  # 16 MiB of W_h alone
