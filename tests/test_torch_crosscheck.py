"""The PyTorch cross-check's book models equal our scratch models: same weights -> same logits, state, loss, update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import config as config_lib
from lstm_jax.d2l import rows as d2l_rows
from lstm_jax.d2l import torch_crosscheck as tc
from lstm_jax.models.scratch import LanguageModel
from lstm_jax.train import loop as train
from lstm_jax.train import loss as loss_lib
from lstm_jax.train import optimizer as optimizer_lib
from lstm_jax.train import state as train_state_lib

torch = pytest.importorskip("torch")

V, H, B, T = 7, 5, 3, 4


@pytest.mark.parametrize("cell", ["gru", "rnn", "lstm"])
@pytest.mark.slow
def test_same_weights_give_the_same_logits_state_loss_and_sgd_step(cell):
  model = LanguageModel(vocab_size=V, hidden_size=H, cell=cell)
  keys = iter(jax.random.split(jax.random.key(0), 20))
  params = jax.tree.map(lambda x: 0.5 * jax.random.normal(next(keys), x.shape), model.init(next(keys)))
  carry = jax.tree.map(lambda x: jax.random.normal(next(keys), x.shape), model.zero_carry(B))
  inputs = jax.random.randint(next(keys), (B, T), 0, V)
  targets = jax.random.randint(next(keys), (B, T), 0, V)
  p = tc.from_ours(cell, params)
  state = tuple(torch.tensor(np.asarray(x)) for x in jax.tree.leaves(carry[0]))  # (h,) or LSTM (h, c)
  inputs_t, targets_t = torch.tensor(np.asarray(inputs)).long(), torch.tensor(np.asarray(targets)).long()

  logits, new_carry = model.apply(params, inputs, carry)
  with torch.no_grad():
    logits_t, state_t = tc.forward(cell, p, inputs_t, state)
  np.testing.assert_allclose(logits_t.reshape(T, B, V).transpose(0, 1).numpy(), logits, rtol=1e-5, atol=1e-6)
  for ours, theirs in zip(jax.tree.leaves(new_carry[0]), state_t):
    np.testing.assert_allclose(theirs.numpy(), ours, rtol=1e-5, atol=1e-6)

  opt = config_lib.default_config().optimizer
  opt.name, opt.learning_rate, opt.clip_norm = "sgd", 3.0, 0.05
  optimizer = optimizer_lib.make_optimizer(opt)
  jax_state = train_state_lib.TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), jax.random.key(0), carry)
  jax_state, metrics = train.train_step(jax_state, inputs, targets, model=model, optimizer=optimizer, carry_state=True)
  assert float(metrics["grad_norm"]) > opt.clip_norm  # the clipping is exercised
  loss_t, _ = tc.train_step(cell, p, inputs_t, targets_t, state, opt.learning_rate, opt.clip_norm)
  np.testing.assert_allclose(loss_t, jnp.mean(loss_lib.token_nll(logits, targets)), rtol=1e-5)
  np.testing.assert_allclose(loss_t * B * T, metrics["nll_sum"], rtol=1e-5)
  for name, value in tc.from_ours(cell, jax_state.params).items():
    np.testing.assert_allclose(p[name].detach().numpy(), value.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_init_is_the_books():
  p = tc.init_params("gru", 300, 64, seed=0)
  assert list(p) == ["W_xz", "W_hz", "b_z", "W_xr", "W_hr", "b_r", "W_xh", "W_hh", "b_h", "W_hq", "b_q"]
  assert p["W_xz"].shape == (300, 64) and p["W_hq"].shape == (64, 300)
  assert abs(float(p["W_xz"].detach().std()) - 0.01) < 5e-4 and not p["b_h"].any() and not p["b_q"].any()
  assert torch.equal(p["W_hh"], tc.init_params("gru", 300, 64, seed=0)["W_hh"])


def test_refuses_models_it_does_not_implement():
  tc.check_config(d2l_rows.load_config("d2l_jaychou.py:model=gru,impl=scratch"))
  with pytest.raises(ValueError, match="scratch"):
    tc.check_config(d2l_rows.load_config("d2l_jaychou.py:model=gru,impl=library"))
