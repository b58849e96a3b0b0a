"""Averaged SGD (``optimizer.averaging=nt_asgd``): the running mean of the iterates, NT-ASGD's trigger, and what
evaluation reads. Exact resume with averaging on is in test_checkpoint (the SIGKILL test's averaged case)."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import config as config_lib
from lstm_jax.models.scratch import LanguageModel
from lstm_jax.train import loop, optimizer, state, validation


def _state(averaging=True):
  model = LanguageModel(vocab_size=7, hidden_size=4)
  return state.create_train_state(model, optimizer.make_optimizer(config_lib.default_config().optimizer), seed=0,
                                  batch_size=2, averaging=averaging)


def test_the_average_is_the_mean_of_the_iterates_from_its_start():
  train_state = _state()
  iterates = [jax.tree.map(lambda p, k=k: p + k, train_state.params) for k in range(1, 5)]
  average = train_state.average
  average = state.update_average(average, iterates[0])  # not started: unchanged
  assert int(average["count"]) == 0
  train_state = state.start_average(train_state._replace(params=iterates[0]))
  average = train_state.average
  for params in iterates[1:]:
    average = state.update_average(average, params)
  assert int(average["count"]) == 4
  want = jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0), *iterates)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), average["params"], want)


def test_evaluation_reads_the_average_once_started_and_no_average_without_averaging():
  train_state = _state()
  assert state.evaluation_params(train_state) is train_state.params
  started = state.start_average(train_state._replace(params=jax.tree.map(lambda p: p + 1, train_state.params)))
  assert state.evaluation_params(started) is started.average["params"]
  assert _state(averaging=False).average is None
  assert "average" not in state.SavedState(_state(averaging=False)).to_tree()["train"]  # old checkpoints' layout


@pytest.mark.parametrize("history, current, nonmono, starts", [
    ([3.0, 2.0, 1.5, 1.4, 1.3, 1.2], 3.5, 5, True),    # worse than the best before the last 5 checks (3.0)
    ([3.0, 2.0, 1.5, 1.4, 1.3, 1.2], 2.5, 5, False),   # better than that best: keep going
    ([3.0, 2.0, 1.5], 3.5, 5, False),                  # too few checks yet
    ([2.0, 1.0], 2.5, 1, True),
    ([2.0, 1.0], 1.5, 1, False),
])
def test_nt_asgd_starts_when_validation_is_worse_than_the_best_before_the_last_n(history, current, nonmono, starts):
  c = config_lib.default_config()
  c.optimizer.nonmono = nonmono
  run = types.SimpleNamespace(config=c, records=[{"epoch": i + 1, "val_nll": v} for i, v in enumerate(history)])
  assert loop.averaging_starts(run, _state(), {"val_nll": current}) is starts
  assert not loop.averaging_starts(run, _state(averaging=False), {"val_nll": current})
  assert not loop.averaging_starts(run, state.start_average(_state()), {"val_nll": current})


def test_averaging_needs_validation_every_epoch():
  c = config_lib.default_config()
  c.optimizer.averaging = "nt_asgd"
  assert any("eval_every_epochs=1" in p for p in validation.config_problems(c))
  c.train.eval_every_epochs = 1
  assert validation.config_problems(c) == []
  c.optimizer.averaging = "asgd_always"
  assert any("optimizer.averaging" in p for p in validation.config_problems(c))


def test_the_jitted_step_advances_a_started_average():
  model = LanguageModel(vocab_size=7, hidden_size=4)
  sgd = optimizer.make_optimizer(config_lib.default_config().optimizer)
  train_state = state.start_average(state.create_train_state(model, sgd, seed=0, batch_size=2, averaging=True))
  step = loop.compile_train_step(model, sgd, carry_state=False)
  tokens = jax.random.randint(jax.random.key(0), (2, 6), 0, 7)
  first = jax.tree.map(np.asarray, train_state.params)  # the step donates the state's buffers
  train_state, _ = step(train_state, tokens[:, :-1], tokens[:, 1:])
  assert int(train_state.average["count"]) == 2
  jax.tree.map(lambda a, p0, p1: np.testing.assert_allclose(a, (np.asarray(p0) + np.asarray(p1)) / 2, rtol=1e-5,
                                                            atol=1e-7),
               train_state.average["params"], first, train_state.params)
