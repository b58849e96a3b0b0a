"""The perplexity evaluator against a direct computation over the whole stream."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax.models.scratch import LanguageModel
from lstm_jax.train import evaluate
from lstm_jax.train import loss


def test_perplexity_of_a_stream_equals_one_long_pass():
  model = LanguageModel(vocab_size=6, hidden_size=10, init_scheme="flax")
  params = model.init(jax.random.key(1))
  ids = np.asarray(jax.random.randint(jax.random.key(2), (61,), 0, 6), np.int32)
  result = evaluate.evaluate_ids(model, params, ids, batch_size=1, num_steps=7)  # 60 targets in chunks of 7
  logits, _ = model.apply(params, jnp.asarray(ids[None, :-1]))
  nll = np.asarray(loss.token_nll(logits, jnp.asarray(ids[None, 1:])))[0]
  assert result.num_tokens == 60
  np.testing.assert_allclose(result.mean_nll, nll.mean(), rtol=1e-5)
  np.testing.assert_allclose(result.stderr_nll, nll.std() / math.sqrt(60), rtol=1e-3)
  np.testing.assert_allclose(result.perplexity, math.exp(nll.mean()), rtol=1e-5)
  np.testing.assert_allclose(result.bits_per_token, nll.mean() / math.log(2), rtol=1e-5)


def test_rows_are_evaluated_independently():
  """With several rows, each row is its own contiguous stream: equal to evaluating the rows one by one."""
  model = LanguageModel(vocab_size=5, hidden_size=4, init_scheme="flax")
  params = model.init(jax.random.key(3))
  ids = np.asarray(jax.random.randint(jax.random.key(4), (41,), 0, 5), np.int32)
  together = evaluate.evaluate_ids(model, params, ids, batch_size=2, num_steps=6)
  rows = [ids[:21], ids[20:41]]
  separate = [evaluate.evaluate_ids(model, params, r, batch_size=1, num_steps=50) for r in rows]
  np.testing.assert_allclose(together.mean_nll, np.mean([s.mean_nll for s in separate]), rtol=1e-5)


def test_uniform_model_has_perplexity_equal_to_vocab_size():
  model = LanguageModel(vocab_size=7, hidden_size=3)
  params = jax.tree.map(jnp.zeros_like, model.init(jax.random.key(0)))
  result = evaluate.evaluate_ids(model, params, np.arange(50, dtype=np.int32) % 7, batch_size=3, num_steps=4)
  np.testing.assert_allclose(result.perplexity, 7.0, rtol=1e-5)


def test_batch_perplexity_mean_is_the_unweighted_mean_of_each_batchs_perplexity():
  """d2l 1.x's validation number: per-batch perplexities averaged without weights (the last batch is smaller)."""
  model = LanguageModel(vocab_size=9, hidden_size=6, init_scheme="flax")
  params = model.init(jax.random.key(0))
  tokens = np.asarray(jax.random.randint(jax.random.key(1), (7, 6), 0, 9), np.int32)
  batches = [(tokens[:4, :5], tokens[:4, 1:]), (tokens[4:, :5], tokens[4:, 1:])]  # 4 rows, then 3
  each = [evaluate.evaluate_batches(model, params, [b], carry_state=False).perplexity for b in batches]
  result = evaluate.evaluate_batches(model, params, batches, carry_state=False)
  np.testing.assert_allclose(result.batch_perplexity_mean, np.mean(each), rtol=1e-6)
  assert abs(result.batch_perplexity_mean - result.perplexity) > 1e-4  # a different quantity from the pooled one
  assert result.as_dict("val_")["val_batch_perplexity_mean"] == result.batch_perplexity_mean
