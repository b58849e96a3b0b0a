"""The Pallas LSTM kernels (lstm_jax.kernels.lstm_pallas) in interpret mode against the hand-written backward of
lstm_fused_vjp: outputs, final carry and gradients w.r.t. W_h, xproj and the initial carry, at shapes that are
not tile multiples, tile-aligned ones and ones that need several hidden tiles; bfloat16 dot operands; the members
axis; and lowering for CUDA (Triton) and TPU (Mosaic) without an accelerator, via jax.export."""

import contextlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from lstm_jax.cells import lstm
from lstm_jax.cells import lstm_fused_vjp
from lstm_jax.kernels import layout as layout_lib
from lstm_jax.kernels import lstm_pallas

TOL = dict(rtol=1e-5, atol=1e-5)  # float32 dots on both sides; only summation order differs
BF16_TOL = dict(rtol=0.0, atol=5e-2)  # bf16 dot operands (8-bit mantissa) against the float32 reference
TRITON_CALL = "__gpu$xla.gpu.triton"


def _normal(rng, shape, scale=1.0):
  return jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)


def _problem(T, B, H, K=None, seed=0):
  """``W_h [(K,) H, 4H]``, ``xproj [(K,) T, B, 4H]``, carry ``[(K,) B, H]`` with N(0, 1) inputs and state."""
  rng = np.random.default_rng(seed)
  lead = () if K is None else (K,)
  W_h = _normal(rng, lead + (H, 4 * H), 1.0 / np.sqrt(H))
  xproj = _normal(rng, lead + (T, B, 4 * H))
  carry = lstm.LSTMCarry(h=_normal(rng, lead + (B, H), 0.5), c=_normal(rng, lead + (B, H)))
  return W_h, xproj, carry


def _loss(recurrence_fn, W_h, xproj, carry):
  """Touches every output: all hidden states (non-uniform weights) and both parts of the final carry."""
  return _loss_of(*recurrence_fn({"W_h": W_h}, xproj, carry))


def _loss_of(final, hs):
  weights = jnp.linspace(-1.0, 2.0, hs.size, dtype=hs.dtype).reshape(hs.shape)
  return jnp.sum(jnp.sin(hs) * weights) + jnp.sum(final.h ** 2) - 0.5 * jnp.sum(final.c * final.h) + jnp.sum(final.c)


def _value_and_grads(recurrence_fn, W_h, xproj, carry, loss=_loss):
  """``(final carry, hs [T, B, H])`` and the gradients ``(dW_h [H, 4H], dxproj [T, B, 4H], dcarry)``."""
  outputs = jax.jit(recurrence_fn)({"W_h": W_h}, xproj, carry)
  grads = jax.jit(jax.grad(lambda *a: loss(recurrence_fn, *a), argnums=(0, 1, 2)))(W_h, xproj, carry)
  return outputs, grads


def _assert_same(actual, expected, tol):
  (a_final, a_hs), (a_dW, a_dx, a_dcarry) = actual
  (e_final, e_hs), (e_dW, e_dx, e_dcarry) = expected
  for name, a, e in [("hs", a_hs, e_hs), ("h_T", a_final.h, e_final.h), ("c_T", a_final.c, e_final.c),
                     ("dW_h", a_dW, e_dW), ("dxproj", a_dx, e_dx), ("dh0", a_dcarry.h, e_dcarry.h),
                     ("dc0", a_dcarry.c, e_dcarry.c)]:
    assert a.shape == e.shape, name
    np.testing.assert_allclose(a, e, **tol, err_msg=name)


@pytest.mark.parametrize("T, B, H, backend", [
    (7, 3, 20, "triton"),   # not tile multiples: B 3 -> 16, H 20 -> 32 per gate
    (7, 3, 20, "tpu"),      # B 3 -> 8, H 20 -> 128 per gate
    (4, 16, 128, "triton"),  # tile-aligned, no padding
    (4, 8, 128, "tpu"),      # tile-aligned, no padding
    (3, 20, 130, "triton"),  # H 130 -> 256: two 128-wide hidden tiles, two batch blocks
])
def test_float32_equals_fused_vjp(T, B, H, backend):
  W_h, xproj, carry = _problem(T, B, H)
  pallas = lambda p, x, c: lstm_pallas.recurrence(p, x, c, backend=backend)
  expected = _value_and_grads(lstm_fused_vjp.recurrence, W_h, xproj, carry)
  _assert_same(_value_and_grads(pallas, W_h, xproj, carry), expected, TOL)
  assert all(float(jnp.abs(g).max()) > 1e-3 for g in jax.tree.leaves(expected[1]))  # no path silently zero


def test_layout_pads_to_backend_tiles():
  kernel = lstm_pallas.KERNEL
  triton = layout_lib.layout("triton", kernel, 35, 3, 20)
  assert (triton.Tp, triton.Tc, triton.Bp, triton.bB, triton.Hp, triton.bh) == (35, 35, 16, 16, 32, 32)
  assert layout_lib.layout("triton", kernel, 9, 40, 1000)[2:6] == (48, 16, 1024, 128)
  tpu = layout_lib.tpu_layout(kernel, 35, 3, 20, jnp.float32, vmem_bytes=128 << 20)
  assert (tpu.Tp, tpu.Tc, tpu.Bp, tpu.bB, tpu.Hp, tpu.bh) == (36, 18, 8, 8, 128, 128)  # 2 chunks, 1 padded step
  assert layout_lib.tpu_layout(kernel, 5, 3, 20, jnp.bfloat16, vmem_bytes=128 << 20)[:6] == (5, 5, 16, 16, 128, 128)
  with pytest.raises(ValueError, match="backend"):
    lstm_pallas.recurrence({"W_h": jnp.zeros((4, 16))}, jnp.zeros((2, 1, 16)),
                           lstm.LSTMCarry(jnp.zeros((1, 4)), jnp.zeros((1, 4))), backend="mosaic_gpu")


@pytest.mark.parametrize("backend", ["triton", "tpu"])
def test_bfloat16_matmul_close_to_float32(backend):
  W_h, xproj, carry = _problem(7, 3, 20)
  bf16 = lambda p, x, c: lstm_pallas.recurrence(p, x, c, matmul_dtype=jnp.bfloat16, backend=backend)
  actual = _value_and_grads(bf16, W_h, xproj, carry)
  _assert_same(actual, _value_and_grads(lstm_fused_vjp.recurrence, W_h, xproj, carry), BF16_TOL)
  f32_hs = jax.jit(lambda p, x, c: lstm_pallas.recurrence(p, x, c, backend=backend))({"W_h": W_h}, xproj, carry)[1]
  assert float(jnp.abs(actual[0][1] - f32_hs).max()) > 1e-4  # the dots really ran in bfloat16
  assert actual[0][1].dtype == jnp.float32 and actual[1][0].dtype == jnp.float32


def test_members_axis_equals_loop_of_single_calls():
  K = 2
  W_h, xproj, carry = _problem(4, 3, 20, K=K)
  def members_loss(recurrence_fn, *args):  # the sum of each member's own loss
    final, hs = recurrence_fn({"W_h": args[0]}, *args[1:])
    return sum(_loss_of(lstm.LSTMCarry(final.h[k], final.c[k]), hs[k]) for k in range(K))

  population = _value_and_grads(lstm_pallas.population_recurrence, W_h, xproj, carry, loss=members_loss)
  via_recurrence = jax.jit(lstm_pallas.recurrence)({"W_h": W_h}, xproj, carry)  # dispatches on W_h.ndim == 3
  np.testing.assert_array_equal(via_recurrence[1], population[0][1])
  single = jax.jit(lambda W, x, c: (lstm_pallas.recurrence({"W_h": W}, x, c),
                                    jax.grad(lambda *a: _loss(lstm_pallas.recurrence, *a), argnums=(0, 1, 2))(W, x, c)))
  singles = [single(W_h[k], xproj[k], jax.tree.map(lambda a: a[k], carry)) for k in range(K)]  # one compile
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *singles)
  _assert_same(population, stacked, dict(rtol=1e-6, atol=1e-6))
  assert float(jnp.abs(population[0][1][0] - population[0][1][1]).max()) > 1e-2  # members really differ


def _target(platform):
  """jax >= 0.11 lowers Triton kernels for a named GPU: without one here, an abstract H200 (the lent machine)."""
  if platform != "cuda":
    return contextlib.nullcontext()
  device = jax.sharding.AbstractDevice(device_kind="NVIDIA H200", num_cores=132, platform="gpu")
  return jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("x",), abstract_device=device))


def _export_text(fn, platform, *args):
  with _target(platform):
    exported = export.export(jax.jit(fn), platforms=[platform],
                             disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON_CALL)])(*args)
  return exported.mlir_module()


@pytest.mark.parametrize("platform, backend, custom_call", [("cuda", "triton", TRITON_CALL),
                                                             ("tpu", "tpu", "tpu_custom_call")])
@pytest.mark.parametrize("matmul_dtype", [jnp.float32, jnp.bfloat16])
def test_forward_and_grad_lower_without_accelerator(platform, backend, custom_call, matmul_dtype):
  """One kernel in the forward, two (the residual-saving forward and the reverse kernel) in the gradient; with
  the members axis still one kernel each. Lowering runs the backend's rules (block shapes, layouts, ops)."""
  for K in (None, 2):
    W_h, xproj, carry = _problem(7, 3, 20, K=K)
    fwd = lambda W, x, c: lstm_pallas.recurrence({"W_h": W}, x, c, matmul_dtype=matmul_dtype, interpret=False,
                                                 backend=backend)
    grad = jax.grad(lambda *a: _loss(lambda p, x, c: fwd(p["W_h"], x, c), *a), argnums=(0, 1, 2))
    for fn, kernels in ((fwd, 1), (grad, 2)):
      calls = re.findall(r"custom_call @([\w$.]+)", _export_text(fn, platform, W_h, xproj, carry))
      assert calls.count(custom_call) == kernels, calls
      assert "mosaic_gpu" not in " ".join(calls)


@pytest.mark.slow
def test_benchmark_sized_kernel_lowers_for_cuda_and_tpu():
  """H=1024 (8x8 hidden tiles per gate on Triton) at T=100: the largest benchmark shape still lowers."""
  W_h, xproj, carry = _problem(100, 32, 1024)
  for platform, backend, custom_call in (("cuda", "triton", TRITON_CALL), ("tpu", "tpu", "tpu_custom_call")):
    fwd = lambda W, x, c: lstm_pallas.recurrence({"W_h": W}, x, c, interpret=False, backend=backend)
    grad = jax.grad(lambda W, x, c: jnp.sum(fwd(W, x, c)[1]), argnums=(0, 1, 2))
    assert custom_call in _export_text(grad, platform, W_h, xproj, carry)
