"""Variable-length batches and the bidirectional layer: a padded batch equals each sequence run alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import cells
from lstm_jax.data import vocab as vocab_lib
from lstm_jax.models import linen_layers as linen
from lstm_jax.models import variable_length
from lstm_jax.models.scratch import LanguageModel
from lstm_jax.train import evaluate
from lstm_jax.train import generate
from lstm_jax.train import loss

T, I, H = 7, 5, 4
LENGTHS = np.array([7, 3, 1, 5], np.int32)
CELLS = ["lstm", "gru", "gru_reset_after", "rnn", "lstm_peephole", "lstm_coupled"]


def _params(cell, seed=0):
  params = cells.get_family(cell).init_params(jax.random.key(seed), I, H, "pytorch")
  return jax.tree.map(lambda v: 3.0 * v, params)  # larger weights: padding mistakes would show


def _padded_inputs(seed=1):
  """``[T, B, in]`` with garbage (not zeros) at the padded steps."""
  return jax.random.normal(jax.random.key(seed), (T, len(LENGTHS), I))


def _alone(cell, params, xs_TI):
  """One sequence ``[t, in]`` run by the plain (unmasked) layer, batch of one."""
  family = cells.get_family(cell)
  carry, hs = family.recurrence(params, family.project_inputs(params, xs_TI[:, None]), family.zero_carry(1, H))
  return carry, hs[:, 0]


@pytest.mark.parametrize("cell", CELLS)
def test_padded_batch_equals_each_sequence_alone(cell):
  params, xs = _params(cell), _padded_inputs()
  carry, hs = jax.jit(variable_length.layer, static_argnums=0)(cell, params, xs, None, jnp.asarray(LENGTHS))
  for b, length in enumerate(LENGTHS):
    alone_carry, alone_hs = _alone(cell, params, xs[:length, b])
    np.testing.assert_allclose(hs[:length, b], alone_hs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(hs[length:, b], 0.0)  # outputs at padded positions are zero
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got[b], want[0], rtol=1e-5, atol=1e-6),
                 carry, alone_carry)  # the returned carry is the last valid one


def test_zero_length_sequence_keeps_the_initial_carry():
  params, xs = _params("lstm"), _padded_inputs()
  start = cells.lstm.LSTMCarry(h=jnp.ones((4, H)), c=jnp.full((4, H), 2.0))
  carry, hs = variable_length.layer("lstm", params, xs, start, jnp.asarray([0, 2, 0, 7]))
  np.testing.assert_array_equal(carry.c[0], 2.0)
  np.testing.assert_array_equal(hs[:, 0], 0.0)


def test_reverse_valid_reverses_the_valid_part_only_and_is_its_own_inverse():
  xs = jnp.arange(T * 4).reshape(T, 4)
  reversed_ = variable_length.reverse_valid(xs, jnp.asarray(LENGTHS))
  for b, length in enumerate(LENGTHS):
    np.testing.assert_array_equal(reversed_[:length, b], xs[:length, b][::-1])
    np.testing.assert_array_equal(reversed_[length:, b], xs[length:, b])
  np.testing.assert_array_equal(variable_length.reverse_valid(reversed_, jnp.asarray(LENGTHS)), xs)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bidirectional_equals_forward_and_reversed_runs_alone(cell):
  params = variable_length.init_bidirectional(cell, jax.random.key(0), I, H, "pytorch")
  params = jax.tree.map(lambda v: 3.0 * v, params)
  xs = _padded_inputs()
  (carry_fwd, carry_bwd), hs = variable_length.bidirectional(cell, params, xs, jnp.asarray(LENGTHS))
  assert hs.shape == (T, len(LENGTHS), 2 * H)
  for b, length in enumerate(LENGTHS):
    fwd_carry, fwd = _alone(cell, params["forward"], xs[:length, b])
    bwd_carry, bwd = _alone(cell, params["backward"], xs[:length, b][::-1])
    np.testing.assert_allclose(hs[:length, b, :H], fwd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hs[:length, b, H:], bwd[::-1], rtol=1e-5, atol=1e-6)  # aligned to input steps
    np.testing.assert_array_equal(hs[length:, b], 0.0)
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got[b], want[0], rtol=1e-5, atol=1e-6),
                 (carry_fwd, carry_bwd), (fwd_carry, bwd_carry))


def _tokens(seed, shape, vocab=11):
  return np.asarray(jax.random.randint(jax.random.key(seed), shape, 0, vocab), np.int32)


@pytest.mark.slow
def test_model_loss_and_perplexity_ignore_padding():
  model = LanguageModel(vocab_size=11, hidden_size=8, num_layers=2, init_scheme="pytorch")
  params = model.init(jax.random.key(0))
  inputs, targets = _tokens(1, (4, T)), _tokens(2, (4, T))
  lengths = jnp.asarray(LENGTHS)
  logits, carry = model.apply(params, inputs, seq_lengths=lengths)
  nll_sum, count = loss.masked_nll_sum(logits, targets, lengths)
  assert int(count) == LENGTHS.sum()
  # other tokens and targets at the padded positions change nothing
  valid = np.arange(T)[None, :] < LENGTHS[:, None]
  other_inputs, other_targets = np.where(valid, inputs, _tokens(3, (4, T))), np.where(valid, targets, 0)
  other_logits, other_carry = model.apply(params, other_inputs, seq_lengths=lengths)
  np.testing.assert_allclose(loss.masked_nll_sum(other_logits, other_targets, lengths)[0], nll_sum, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), carry, other_carry)
  # and the sum equals the sum over each sequence alone
  alone = sum(float(jnp.sum(loss.token_nll(model.apply(params, inputs[b:b + 1, :n])[0], targets[b:b + 1, :n])))
              for b, n in enumerate(LENGTHS))
  np.testing.assert_allclose(nll_sum, alone, rtol=1e-5)
  evaluation = evaluate.evaluate_padded(model, params, other_inputs, other_targets, lengths)
  np.testing.assert_allclose(evaluation.mean_nll, alone / LENGTHS.sum(), rtol=1e-5)
  assert evaluation.num_tokens == LENGTHS.sum()


def test_batch_generation_of_several_prefixes_equals_one_at_a_time():
  vocab = vocab_lib.sorted_vocab("abcdefgh ", with_unk=True)
  model = LanguageModel(vocab_size=len(vocab), hidden_size=16, init_scheme="pytorch")
  leaves, treedef = jax.tree.flatten(model.init(jax.random.key(0)))  # N(0, 1) everywhere: varied predictions
  params = jax.tree.unflatten(treedef, [jax.random.normal(jax.random.key(i), v.shape) for i, v in enumerate(leaves)])
  prefixes = ["abc", "h", "gfed cba", "bad"]
  together = generate.generate_texts(model, params, vocab, prefixes, 12)
  alone = [generate.generate_text(model, params, vocab, p, 12) for p in prefixes]
  assert together == alone
  assert len(set(t[len(p):] for t, p in zip(together, prefixes))) > 1  # the rows really differ
  sampled = generate.generate_texts(model, params, vocab, prefixes, 12, method="sample", temperature=1.5, seed=3)
  assert sampled == generate.generate_texts(model, params, vocab, prefixes, 12, method="sample", temperature=1.5,
                                            seed=3)  # reproducible by seed
  with pytest.raises(ValueError, match="non-empty"):
    generate.generate_texts(model, params, vocab, ["ab", ""], 3)


def test_linen_layer_with_seq_lengths_equals_the_functional_form():
  params, xs = _params("lstm"), _padded_inputs()
  layer = linen.RecurrentLayer(hidden_size=H, time_major=True)
  carry, hs = layer.apply({"params": params}, xs, seq_lengths=jnp.asarray(LENGTHS))
  want_carry, want_hs = variable_length.layer("lstm", params, xs, None, jnp.asarray(LENGTHS))
  np.testing.assert_allclose(hs, want_hs, rtol=1e-6)
  np.testing.assert_allclose(carry.c, want_carry.c, rtol=1e-6)
