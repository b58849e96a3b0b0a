"""The Pallas kernels of the tanh RNN (lstm_jax.kernels.rnn_pallas) and the reset-after GRU
(lstm_jax.kernels.gru_pallas) in interpret mode against their references: the RNN's hand-written backward
(rnn_fused_vjp) and autodiff of the GRU's scan. Outputs, final carry and the gradients w.r.t. W_h, the recurrent
bias b_hn (GRU), xproj and the initial carry, at a shape that is no tile multiple and a tile-aligned one; bfloat16
dot operands; the members axis; the whole language model against recurrence="scan"; lowering for CUDA (Triton)
and TPU (Mosaic) without an accelerator. The LSTM kernels: tests/test_lstm_pallas.py."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from lstm_jax.benchmarks import lowering
from lstm_jax.cells import gru, rnn_fused_vjp
from lstm_jax.kernels import gru_pallas, rnn_pallas
from lstm_jax.models import scratch as model_lib
from lstm_jax.train import loss as loss_lib

TOL = dict(rtol=1e-5, atol=1e-5)  # float32 dots on both sides; only summation order (and sigmoid's form) differ
BF16_TOL = dict(rtol=0.0, atol=5e-2)  # bf16 dot operands (8-bit mantissa) against the float32 reference
TRITON_CALL = "__gpu$xla.gpu.triton"

# cell -> (Pallas module, reference recurrence, gate blocks G, recurrent params besides W_h)
CELLS = {"rnn": (rnn_pallas, rnn_fused_vjp.recurrence, 1, ()),
         "gru_reset_after": (gru_pallas, gru.reset_after.recurrence, 3, ("b_hn",))}


def _normal(rng, shape, scale=1.0):
  return jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)


def _problem(cell, T, B, H, K=None, seed=0):
  """``params {"W_h": [(K,) H, G*H] (, "b_hn": [(K,) H])}``, ``xproj [(K,) T, B, G*H]``, ``h0 [(K,) B, H]``."""
  _, _, G, extra = CELLS[cell]
  rng = np.random.default_rng(seed)
  lead = () if K is None else (K,)
  params = {"W_h": _normal(rng, lead + (H, G * H), 1.0 / np.sqrt(H))}
  params.update({name: _normal(rng, lead + (H,), 0.5) for name in extra})
  return params, _normal(rng, lead + (T, B, G * H)), _normal(rng, lead + (B, H), 0.5)


def _loss(recurrence_fn, params, xproj, h0):
  """Touches every output: all hidden states (non-uniform weights) and the final state."""
  final, hs = recurrence_fn(params, xproj, h0)
  weights = jnp.linspace(-1.0, 2.0, hs.size, dtype=hs.dtype).reshape(hs.shape)
  return jnp.sum(jnp.sin(hs) * weights) + jnp.sum(final ** 2) - jnp.sum(final)


def _value_and_grads(recurrence_fn, params, xproj, h0):
  """``(final h, hs)`` of the plain forward and the gradients ``(dparams, dxproj, dh0)``, in one jit (one compile:
  interpret mode spends its time compiling)."""
  grad = jax.grad(lambda *a: _loss(recurrence_fn, *a), argnums=(0, 1, 2))
  return jax.jit(lambda *a: (recurrence_fn(*a), grad(*a)))(params, xproj, h0)


@functools.lru_cache
def _expected(cell, T, B, H, K=None):
  """The reference's ``_value_and_grads`` (over the members with ``jax.vmap`` when K is set), computed once."""
  reference = CELLS[cell][1] if K is None else jax.vmap(CELLS[cell][1])
  return _value_and_grads(reference, *_problem(cell, T, B, H, K))


def _named(result):
  (final, hs), (dparams, dxproj, dh0) = result
  return {"hs": hs, "h_T": final, "dxproj": dxproj, "dh0": dh0, **{f"d{k}": v for k, v in dparams.items()}}


def _assert_same(actual, expected, tol):
  actual, expected = _named(actual), _named(expected)
  assert actual.keys() == expected.keys()
  for name in expected:
    assert actual[name].shape == expected[name].shape, name
    np.testing.assert_allclose(actual[name], expected[name], **tol, err_msg=name)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("T, B, H, K", [
    pytest.param(7, 3, 20, None, id="unaligned"),      # not tile multiples: B 3 -> 16, H 20 -> 32 per gate block
    pytest.param(4, 16, 128, 2, id="aligned-members"),  # no padding; K = 2 members as a grid axis
])
def test_float32_equals_reference(cell, T, B, H, K):
  """With K, ``recurrence`` dispatches on ``W_h.ndim == 3`` to ``population_recurrence`` (one pallas_call, K a grid
  axis) and the reference is mapped over the members."""
  params, xproj, h0 = _problem(cell, T, B, H, K)
  expected = _expected(cell, T, B, H, K)
  pallas = lambda p, x, c: CELLS[cell][0].recurrence(p, x, c, backend="triton")
  actual = _value_and_grads(pallas, params, xproj, h0)
  _assert_same(actual, expected, TOL)
  assert all(float(jnp.abs(g).max()) > 1e-3 for g in jax.tree.leaves(expected[1]))  # no path silently zero
  if K is not None:
    assert float(jnp.abs(actual[0][1][0] - actual[0][1][1]).max()) > 1e-2  # members really differ


@pytest.mark.slow  # 2-6 s each in interpret mode: kept out of the default run so the file stays short
@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("T, B, H, K, backend", [
    pytest.param(7, 3, 20, None, "tpu", id="tpu-layout"),  # B 3 -> 8, H 20 -> 128 per gate block
    pytest.param(3, 20, 130, None, "triton", id="two-tiles"),  # H 130 -> 256: two 128-wide tiles per gate block
                                                                # (b_hn sliced per tile), two batch blocks
    pytest.param(4, 3, 20, 2, "tpu", id="tpu-members"),   # padded members on the TPU layout
])
def test_float32_equals_reference_in_other_layouts(cell, T, B, H, K, backend):
  pallas = lambda p, x, c: CELLS[cell][0].recurrence(p, x, c, backend=backend)
  _assert_same(_value_and_grads(pallas, *_problem(cell, T, B, H, K)), _expected(cell, T, B, H, K), TOL)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_bfloat16_matmul_close_to_float32(cell):
  params, xproj, h0 = _problem(cell, 7, 3, 20)
  bf16 = lambda p, x, c: CELLS[cell][0].recurrence(p, x, c, matmul_dtype=jnp.bfloat16, backend="triton")
  actual, expected = _value_and_grads(bf16, params, xproj, h0), _expected(cell, 7, 3, 20)
  _assert_same(actual, expected, BF16_TOL)
  assert float(jnp.abs(actual[0][1] - expected[0][1]).max()) > 1e-4  # the dots really ran in bfloat16
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(actual))


@pytest.mark.parametrize("cell", sorted(CELLS))
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


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("platform, backend, custom_call", [("cuda", "triton", TRITON_CALL),
                                                             ("tpu", "tpu", "tpu_custom_call")])
def test_forward_and_grad_lower_without_accelerator(cell, platform, backend, custom_call):
  """One kernel in the forward, two in the gradient, with and without the members axis, f32 and bf16 operands
  (lowering runs the backend's rules: block shapes, layouts, ops). Whole train steps: test_kernel_lowering.py."""
  module = CELLS[cell][0]
  for K, matmul_dtype in ((None, jnp.float32), (2, jnp.bfloat16)):
    params, xproj, h0 = _problem(cell, 7, 3, 20, K=K)
    fwd = lambda p, x, c: module.recurrence(p, x, c, matmul_dtype=matmul_dtype, interpret=False, backend=backend)
    grad = jax.grad(lambda *a: _loss(fwd, *a), argnums=(0, 1, 2))
    for fn, kernels in ((fwd, 1), (grad, 2)):
      with lowering._target(platform):
        text = export.export(jax.jit(fn), platforms=[platform], disabled_checks=[
            export.DisabledSafetyCheck.custom_call(TRITON_CALL)])(params, xproj, h0).mlir_module()
      calls = re.findall(r"custom_call @([\w$.]+)", text)
      assert calls.count(custom_call) == kernels, calls
