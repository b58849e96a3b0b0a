"""What the kernel tests share (``test_kernels``, ``test_kernel_lowering``, ``test_kernel_envelope``,
``test_kernel_sharded``, ``test_kernel_compile``): the cells with a Pallas kernel and their references, one problem
builder, one loss that sees every output, one value-and-gradients helper, the comparison by output name, and one
runner for a script on N simulated CPU devices (or CPU only) in a subprocess."""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from layer_checks import assert_trees_close  # noqa: F401 (the one tree comparison, re-exported for kernel tests)
from simulated_devices import REPO, run_script  # noqa: F401 (the one runner on N simulated devices, re-exported)
from lstm_jax.cells import gru, lstm_fused_vjp, rnn_fused_vjp
from lstm_jax.cells.lstm import LSTMCarry
from lstm_jax.kernels import gru_pallas, lstm_pallas, rnn_pallas

TOL = dict(rtol=1e-5, atol=1e-5)  # float32 dots on both sides; only summation order (and sigmoid's form) differ
CHUNK_TOL = dict(rtol=2e-5, atol=2e-5)  # several time chunks: the state handed on between them adds a little
BF16_TOL = dict(rtol=0.0, atol=5e-2)  # bf16 dot operands (8-bit mantissa) against the float32 reference


class Cell(NamedTuple):
  module: object  # the Pallas module: recurrence, population_recurrence, KERNEL
  reference: Callable  # the recurrence it equals (outputs and gradients)
  num_gates: int  # gate blocks G of W_h [H, G*H]
  extra: tuple[str, ...] = ()  # recurrent params besides W_h, each [H]


CELLS = {
    "lstm": Cell(lstm_pallas, lstm_fused_vjp.recurrence, 4),
    "rnn": Cell(rnn_pallas, rnn_fused_vjp.recurrence, 1),
    "gru_reset_after": Cell(gru_pallas, gru.reset_after.recurrence, 3, ("b_hn",)),
}
CELL_NAMES = list(CELLS)


def problem_shapes(cell: str, T: int, B: int, H: int, K: int | None = None):
  """``(params, xproj, carry)`` shapes: ``{"W_h": [(K,) H, G*H](, "b_hn": [(K,) H])}``, ``[(K,) T, B, G*H]`` and
  ``[(K,) B, H]`` (an ``LSTMCarry`` of two for the LSTM)."""
  c = CELLS[cell]
  lead = () if K is None else (K,)
  params = {"W_h": lead + (H, c.num_gates * H), **{name: lead + (H,) for name in c.extra}}
  state = lead + (B, H)
  return params, lead + (T, B, c.num_gates * H), (LSTMCarry(state, state) if cell == "lstm" else state)


def problem(cell: str, T: int, B: int, H: int, K: int | None = None, seed: int = 0, dtype=jnp.float32):
  """``(params, xproj, carry)`` of ``problem_shapes`` with N(0, 1) inputs, ``W_h`` of scale ``1/sqrt(H)``, the
  recurrent biases and ``h0`` of scale 0.5 (the LSTM's ``c0`` of scale 1)."""
  rng = np.random.default_rng(seed)
  normal = lambda shape, scale=1.0: jnp.asarray(scale * rng.standard_normal(shape), dtype)
  params_shapes, xproj_shape, carry_shapes = problem_shapes(cell, T, B, H, K)
  params = {"W_h": normal(params_shapes["W_h"], 1.0 / np.sqrt(H))}
  params.update({name: normal(shape, 0.5) for name, shape in params_shapes.items() if name != "W_h"})
  xproj = normal(xproj_shape)
  if cell == "lstm":
    carry = LSTMCarry(h=normal(carry_shapes.h, 0.5), c=normal(carry_shapes.c))
  else:
    carry = normal(carry_shapes, 0.5)
  return params, xproj, carry


def kernel(cell: str, backend: str = "triton", matmul_dtype=jnp.float32, compiled: bool = False) -> Callable:
  """``cell``'s Pallas ``recurrence(params, xproj, carry)`` on ``backend``'s layout: ``compiled`` (to lower it for
  a chip), else in interpret mode, except that the GPU layout runs compiled where a GPU is (``launch/gpu_check.sh``
  runs these tests there)."""
  interpret = False if compiled else None if backend == "triton" else True
  return functools.partial(CELLS[cell].module.recurrence, matmul_dtype=matmul_dtype, interpret=interpret,
                           backend=backend)


def loss(recurrence_fn: Callable, params, xproj, carry):
  """Touches every output, each differently: all hidden states (non-uniform weights over each member's ``[T, B,
  H]``, so a members axis gives the sum of the members' losses) and every part of the final carry."""
  final, hs = recurrence_fn(params, xproj, carry)
  size = int(np.prod(hs.shape[-3:]))
  weights = jnp.linspace(-1.0, 2.0, size, dtype=hs.dtype).reshape(hs.shape[-3:])
  carry_terms = sum(jnp.sum(leaf ** 2) - (0.5 + i) * jnp.sum(leaf) for i, leaf in enumerate(jax.tree.leaves(final)))
  return jnp.sum(jnp.sin(hs) * weights) + carry_terms


def value_and_grads(recurrence_fn: Callable, params, xproj, carry):
  """``((final carry, hs), (dparams, dxproj, dcarry))`` of ``loss``, in one jit (one compile: interpret mode spends
  its time compiling)."""
  grad = jax.grad(lambda *a: loss(recurrence_fn, *a), argnums=(0, 1, 2))
  return jax.jit(lambda *a: (recurrence_fn(*a), grad(*a)))(params, xproj, carry)


def named(result) -> dict:
  """``value_and_grads``' result by name: hs, the final carry (h_T, c_T), dW_h (and db_hn), dxproj, dh0 (, dc0)."""
  (final, hs), (dparams, dxproj, dcarry) = result
  out = {"hs": hs}
  if isinstance(final, LSTMCarry):
    out.update(h_T=final.h, c_T=final.c)
  else:
    out["h_T"] = final
  out.update({f"d{k}": v for k, v in dparams.items()})
  out["dxproj"] = dxproj
  if isinstance(dcarry, LSTMCarry):
    out.update(dh0=dcarry.h, dc0=dcarry.c)
  else:
    out["dh0"] = dcarry
  return out


def assert_same(actual, expected, tol, names=None) -> None:
  """The named outputs and gradients of two ``value_and_grads`` results (``names``: those only; default all):
  same shape, close within ``tol``."""
  actual, expected = named(actual), named(expected)
  assert actual.keys() == expected.keys()
  for name in expected if names is None else names:
    assert actual[name].shape == expected[name].shape, name
    np.testing.assert_allclose(actual[name], expected[name], **tol, err_msg=name)


def assert_no_gradient_zero(result) -> None:
  """No path silently zero: every gradient of a ``value_and_grads`` result has entries over 1e-3."""
  assert all(float(jnp.abs(g).max()) > 1e-3 for g in jax.tree.leaves(result[1]))

