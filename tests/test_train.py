"""The train step and loop: clipping, every parameter learns, carried state, and a tiny end-to-end run."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lstm_jax import config as config_lib
from lstm_jax.data import pipeline
from lstm_jax.models import factory as models
from lstm_jax.models import scratch as model_lib
from lstm_jax.train import loop as train
from lstm_jax.train import loss as loss_lib
from lstm_jax.train import metrics as metrics_lib
from lstm_jax.train import optimizer as optimizer_lib
from lstm_jax.train import state as train_state_lib
from lstm_jax.train import workdir as workdir_lib


def _tiny_config(text_path, **overrides):
  config = config_lib.default_config()
  config.data.corpus = str(text_path)
  config.data.edition = "raw"
  config.data.max_tokens = 2000
  config.data.num_val_tokens = 300
  config.data.batch_size = 4
  config.data.num_steps = 8
  config.model.hidden_size = 16
  config.optimizer.learning_rate = 1.0
  config.optimizer.clip_norm = 1.0
  config.train.num_epochs = 2
  config.train.generate_every_epochs = 0
  config.generate.prefixes = ("the ",)
  config.generate.num_tokens = 10
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def test_clipped_sgd_matches_the_book_rule():
  grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([12.0])}  # global norm 13
  optimizer = optimizer_lib.make_optimizer(config_lib.default_config().optimizer)  # sgd lr 100, clip 0.01
  updates, _ = optimizer.update(grads, optimizer.init(grads))
  expected = jax.tree.map(lambda g: -100.0 * g * 0.01 / 13.0, grads)
  chex_tol = dict(rtol=1e-6)
  for key in grads:
    np.testing.assert_allclose(updates[key], expected[key], **chex_tol)
  assert float(optax.global_norm(updates)) == pytest.approx(1.0, rel=1e-6)  # lr * theta


def test_unknown_optimizer_is_a_clear_error():
  config = config_lib.default_config()
  config.optimizer.name = "lion2"
  with pytest.raises(ValueError, match="--config.optimizer.name"):
    optimizer_lib.make_optimizer(config.optimizer)


def test_one_step_changes_every_parameter_and_lowers_the_loss():
  model = model_lib.LanguageModel(vocab_size=11, hidden_size=8, num_layers=2, init_scheme="flax")
  config = config_lib.default_config().optimizer
  config.learning_rate, config.clip_norm = 0.5, 0.0
  optimizer = optimizer_lib.make_optimizer(config)
  state = train_state_lib.create_train_state(model, optimizer, seed=0, batch_size=3)
  before = jax.tree.map(np.asarray, state.params)  # the step donates its input state
  inputs = jax.random.randint(jax.random.key(1), (3, 6), 0, 11)
  targets = jnp.roll(inputs, -1, axis=1)
  step = train.compile_train_step(model, optimizer, carry_state=False)
  state1, metrics1 = step(state, inputs, targets)
  for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(state1.params)):
    assert not np.allclose(old, new)
  assert int(state1.step) == 1
  _, metrics2 = step(state1, inputs, targets)
  assert float(metrics2["nll_sum"]) < float(metrics1["nll_sum"])


@pytest.mark.slow
def test_carried_state_is_used_but_gradients_stop_at_the_boundary():
  """With carry_state, batch 2 starts from batch 1's final state; the gradient is that of batch 2 alone."""
  model = model_lib.LanguageModel(vocab_size=7, hidden_size=5, init_scheme="flax")
  opt_config = config_lib.default_config().optimizer
  opt_config.learning_rate, opt_config.clip_norm = 0.1, 0.0
  optimizer = optimizer_lib.make_optimizer(opt_config)
  state = train_state_lib.create_train_state(model, optimizer, seed=0, batch_size=2)
  tokens = jax.random.randint(jax.random.key(2), (2, 9), 0, 7)
  first, second = tokens[:, :4], tokens[:, 4:8]
  _, carry = model.apply(state.params, first)
  expected_loss = lambda p: jnp.mean(loss_lib.token_nll(model.apply(p, second, carry)[0], tokens[:, 5:9]))
  expected_grads = jax.grad(expected_loss)(state.params)
  stepped, metrics = train.train_step(state._replace(carry=carry), second, tokens[:, 5:9], model=model,
                                      optimizer=optimizer, carry_state=True)
  expected_params = jax.tree.map(lambda p, g: p - 0.1 * g, state.params, expected_grads)
  for a, b in zip(jax.tree.leaves(expected_params), jax.tree.leaves(stepped.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(metrics["nll_sum"] / 8, expected_loss(state.params), rtol=1e-6)
  _, carry_after = model.apply(state.params, second, carry)
  for a, b in zip(jax.tree.leaves(carry_after), jax.tree.leaves(stepped.carry)):
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("sampling", ["sequential", "random"])
def test_tiny_run_end_to_end_writes_metrics_and_learns(tmp_path, tiny_text, sampling, capsys):
  text_path = tmp_path / "corpus.txt"
  text_path.write_text(tiny_text * 3)
  config = _tiny_config(text_path, **{"data.sampling": sampling, "train.num_epochs": 6})
  summary = train.train_and_evaluate(config, str(tmp_path / "work"))
  records = [r for r in workdir_lib.read_metrics(tmp_path / "work") if "epoch" in r]
  assert [r["epoch"] for r in records if "final" not in r] == list(range(1, 7))
  assert records[-1]["train_perplexity"] < records[0]["train_perplexity"]
  assert math.isfinite(summary["val_perplexity"]) and summary["val_perplexity"] < len(set(tiny_text)) + 1
  saved = json.loads((tmp_path / "work" / "config.json").read_text())
  assert saved["config"]["data"]["sampling"] == sampling
  output = capsys.readouterr().out
  assert "perplexity" in output and "tokens/s" in output and " - the " in output
  # character tokens: bits per character beside perplexity, in the records and the progress lines
  assert all(r["train_bpc"] == pytest.approx(r["train_loss"] / math.log(2)) for r in records)
  assert summary["val_bpc"] == pytest.approx(summary["val_nll"] / math.log(2)) and " bpc " in output


@pytest.mark.parametrize("carry_state", [None, False])
def test_loop_carries_or_zeroes_the_state_as_configured(tmp_path, tiny_text, carry_state):
  """Sequential sampling carries the state between minibatches unless ``data.carry_state=False`` (d2l 0.x's
  "random" RNN run): one epoch of the loop equals a hand loop of train steps with that rule, and not the other.
  The epoch record's d2l 1.x measure is the mean of the last half's per-batch perplexities of that hand loop."""
  from lstm_jax.data import corpora  # noqa: PLC0415
  from lstm_jax.train import checkpoint  # noqa: PLC0415
  text_path = tmp_path / "corpus.txt"
  text_path.write_text(tiny_text)
  config = _tiny_config(text_path, **{"data.carry_state": carry_state, "train.num_epochs": 1,
                                      "data.max_tokens": 400, "train.log_batch_perplexity": True})
  train.train_and_evaluate(config, str(tmp_path / "work"))
  _, trained, _, _ = checkpoint.load_params(tmp_path / "work")

  model = models.from_config(config.model, len(corpora.load(config.data).vocab))
  optimizer = optimizer_lib.make_optimizer(config.optimizer)
  batches = pipeline.epoch_batches(config, corpora.load(config.data), epoch=1)
  assert len(batches) > 1
  by_rule, batch_perplexities = {}, {}
  for carry in (True, False):
    state = train_state_lib.create_train_state(model, optimizer, config.seed, config.data.batch_size)
    step = train.compile_train_step(model, optimizer, carry_state=carry)
    batch_perplexities[carry] = []
    for inputs, targets in batches:
      state, metrics = step(state, inputs, targets)
      batch_perplexities[carry].append(math.exp(float(metrics["nll_sum"]) / targets.size))
    by_rule[carry] = state.params
  expected, other = (by_rule[True], by_rule[False]) if carry_state is None else (by_rule[False], by_rule[True])
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(trained)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert any(not np.allclose(a, b, rtol=1e-4) for a, b in zip(jax.tree.leaves(other), jax.tree.leaves(trained)))
  record = workdir_lib.read_metrics(tmp_path / "work")[0]
  last_half = batch_perplexities[carry_state is None][-(len(batches) // 2):]
  assert record["train_batch_perplexity_last_half"] == pytest.approx(np.mean(last_half), rel=1e-5)


def test_carrying_state_across_random_minibatches_is_refused():
  config = config_lib.default_config()
  config.data.sampling, config.data.carry_state = "random", True
  with pytest.raises(ValueError, match="--config.data.sampling=sequential"):
    pipeline.carries_state(config.data)
  assert pipeline.carries_state(config_lib.default_config().data)
  config.data.carry_state = False
  assert not pipeline.carries_state(config.data)


@pytest.mark.slow
def test_main_job_learns_like_the_book_in_40_epochs(tmp_path, real_data_dir):
  """The book (0.2, LSTM scratch) prints perplexity 7.95 at epoch 40; untrained it is 43."""
  from experiments import timemachine_lstm  # noqa: PLC0415
  config = timemachine_lstm.get_config()
  config.data.data_dir = real_data_dir
  config.train.num_epochs = 40
  config.train.log_every_epochs = 10
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert 6.0 < summary["train_perplexity"] < 10.0
