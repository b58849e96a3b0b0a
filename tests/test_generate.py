"""Generation: the compiled decoder equals the book's token-by-token predict loop; sampling modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax.data import vocab as vocab_lib
from lstm_jax.models.scratch import LanguageModel
from lstm_jax.train import generate


def _model_and_params(vocab_size=9):
  model = LanguageModel(vocab_size=vocab_size, hidden_size=12, init_scheme="flax")
  return model, model.init(jax.random.key(0))


def _book_predict(model, params, prefix_ids, num_tokens):
  """The book's predict: zero state, feed the prefix one token at a time, then argmax and feed back."""
  carry = model.zero_carry(1)
  outputs = [int(prefix_ids[0])]
  for token in prefix_ids[1:]:
    _, carry = model.apply(params, jnp.array([[outputs[-1]]]), carry)
    outputs.append(int(token))
  for _ in range(num_tokens):
    logits, carry = model.apply(params, jnp.array([[outputs[-1]]]), carry)
    outputs.append(int(jnp.argmax(logits[0, -1])))
  return outputs[len(prefix_ids):]


def test_greedy_equals_the_book_predict_loop():
  model, params = _model_and_params()
  prefix = np.array([3, 1, 4, 1, 5], np.int32)
  ids = generate.generate_ids(model, params, jnp.asarray(prefix[None]), jax.random.key(0), num_tokens=15)
  assert ids.shape == (1, 15)
  assert list(np.asarray(ids[0])) == _book_predict(model, params, prefix, 15)


def test_top_1_sampling_is_greedy_and_sampling_is_reproducible_by_seed():
  model, params = _model_and_params()
  prefix = jnp.array([[2, 7, 1, 8]])
  greedy = generate.generate_ids(model, params, prefix, jax.random.key(0), num_tokens=20)
  top1 = generate.generate_ids(model, params, prefix, jax.random.key(3), num_tokens=20, method="sample", top_k=1)
  np.testing.assert_array_equal(greedy, top1)
  a = generate.generate_ids(model, params, prefix, jax.random.key(5), num_tokens=40, method="sample",
                            temperature=5.0)
  b = generate.generate_ids(model, params, prefix, jax.random.key(5), num_tokens=40, method="sample",
                            temperature=5.0)
  c = generate.generate_ids(model, params, prefix, jax.random.key(6), num_tokens=40, method="sample",
                            temperature=5.0)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_top_k_only_draws_from_the_k_most_likely():
  logits = jnp.array([[0.0, 3.0, 1.0, 2.5, -1.0]])
  keys = jax.random.split(jax.random.key(0), 200)
  draws = {int(generate.choose_next(logits, k, "sample", 10.0, 2)[0]) for k in keys}
  assert draws == {1, 3}


def test_generate_text_keeps_the_prefix():
  vocab = vocab_lib.sorted_vocab("abcdefgh", with_unk=False)
  model, params = _model_and_params(len(vocab))
  text = generate.generate_text(model, params, vocab, "bad", 12)
  assert text.startswith("bad") and len(text) == 15


def test_unknown_method_is_a_clear_error():
  with pytest.raises(ValueError, match="Unknown generation method"):
    generate.choose_next(jnp.zeros((1, 3)), jax.random.key(0), "beam", 1.0, 0)
