"""model.matmul_dtype: bfloat16 operands with float32 accumulation and state, for every recurrence and cell; float32
is the exact default. Each recurrence in bfloat16 is compared with the float32 model (close, but measurably
different, so the bfloat16 path really runs), and each hand-written backward with autodiff in bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax.cells import matmul
from lstm_jax.models import scratch as model_lib

V, H, B, T = 11, 16, 3, 5
BF16_VS_F32 = dict(atol=3e-2)   # bfloat16 keeps 8 mantissa bits: ~4e-3 relative per operand


def _params_and_tokens(cell):
  model = model_lib.LanguageModel(vocab_size=V, hidden_size=H, num_layers=2, cell=cell)
  params = model.init(jax.random.key(0))
  params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(1), x.shape), params)
  return params, jax.random.randint(jax.random.key(2), (B, T), 0, V)


def _outputs(cell, recurrence, matmul_dtype, params, tokens):
  model = model_lib.LanguageModel(vocab_size=V, hidden_size=H, num_layers=2, cell=cell, recurrence=recurrence,
                                  matmul_dtype=matmul_dtype)
  loss = lambda p: jnp.sum(jnp.sin(model.apply(p, tokens)[0]))
  return jax.jit(jax.value_and_grad(loss))(params), model.apply(params, tokens)[0]


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_dot_is_exact_in_float32_and_rounds_operands_in_bfloat16():
  x = jax.random.normal(jax.random.key(0), (4, 8))
  w = jax.random.normal(jax.random.key(1), (8, 3))
  np.testing.assert_array_equal(matmul.dot(x, w), x @ w)
  low = matmul.dot(x, w.astype(jnp.bfloat16))
  assert low.dtype == jnp.float32
  expected = np.asarray(x.astype(jnp.bfloat16), np.float64) @ np.asarray(w.astype(jnp.bfloat16), np.float64)
  np.testing.assert_allclose(low, expected, rtol=1e-5, atol=1e-5)
  assert matmul.dot_as(x.T, x, jnp.bfloat16).dtype == jnp.bfloat16


CASES = [("lstm", "scan"), ("lstm", "fused_vjp"), ("lstm", "pallas"), ("rnn", "scan"), ("rnn", "fused_vjp"),
         ("gru", "scan"), ("gru_reset_after", "scan"), ("lstm_peephole", "scan"), ("lstm_coupled", "scan")]


@pytest.mark.parametrize("cell,recurrence", CASES)
def test_bfloat16_matmuls_stay_close_to_float32_and_differ_from_it(cell, recurrence):
  params, tokens = _params_and_tokens(cell)
  (f32_loss, f32_grads), f32_logits = _outputs(cell, recurrence, "float32", params, tokens)
  (bf16_loss, bf16_grads), bf16_logits = _outputs(cell, recurrence, "bfloat16", params, tokens)
  assert bf16_logits.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in jax.tree.leaves(bf16_grads))
  np.testing.assert_allclose(bf16_logits, f32_logits, **BF16_VS_F32)
  assert _max_diff(bf16_grads, f32_grads) < 0.1 * max(float(np.max(np.abs(g))) for g in jax.tree.leaves(f32_grads))
  assert _max_diff(bf16_logits, f32_logits) > 1e-5  # the bfloat16 path really ran


@pytest.mark.parametrize("cell,recurrence", [("lstm", "fused_vjp"), ("lstm", "pallas"), ("rnn", "fused_vjp")])
def test_hand_written_backwards_match_autodiff_in_bfloat16(cell, recurrence):
  params, tokens = _params_and_tokens(cell)
  (scan_loss, scan_grads), scan_logits = _outputs(cell, "scan", "bfloat16", params, tokens)
  (loss, grads), logits = _outputs(cell, recurrence, "bfloat16", params, tokens)
  np.testing.assert_allclose(logits, scan_logits, atol=2e-3)
  (_, f32_grads), _ = _outputs(cell, "scan", "float32", params, tokens)
  # The backwards round in different places (autodiff forms dW_h per step), so neither is the reference: the
  # hand-written one must be no further from float32 than autodiff's (within 2x) and close to it in absolute terms.
  assert _max_diff(grads, f32_grads) < 2.0 * _max_diff(scan_grads, f32_grads)
  assert _max_diff(grads, scan_grads) < 0.1 * max(float(np.max(np.abs(g))) for g in jax.tree.leaves(f32_grads))


def test_unknown_matmul_dtype_is_refused():
  model = model_lib.LanguageModel(vocab_size=V, hidden_size=H, matmul_dtype="float16")
  with pytest.raises(ValueError, match="matmul_dtype"):
    model.apply(model.init(jax.random.key(0)), jnp.zeros((1, 2), jnp.int32))
