"""The regularizers (lstm_jax.models.regularizers) in the scratch model: masks constant over time where they must
be and fresh per minibatch, none without a key (evaluation, generation), DropConnect's gradients by central
differences, the same masks whatever the recurrence, tied weights, AR / TAR, the variational recurrent dropout
against a NumPy step-by-step LSTM (the fused backward's against scan and central differences), and one-line
refusals where an option cannot be honoured."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util

from lstm_jax import config as config_lib
from lstm_jax.models import factory, regularizers
from lstm_jax.models.scratch import LanguageModel
from lstm_jax.train import validation

V, E, H, B, T = 13, 6, 8, 3, 7
TOL = dict(rtol=2e-5, atol=2e-6)
ALL_ON = dict(weight_drop=0.4, locked_dropout=0.3, embedding_dropout=0.2, tie_weights=True, ar=2.0, tar=1.0)


def _model(**kwargs):
  settings = dict(vocab_size=V, hidden_size=H, num_layers=2, embed_dim=E, init_scheme="pytorch",
                  recurrence="scan")
  settings.update(kwargs)
  return LanguageModel(**settings)


def _tokens(seed=0):
  return jax.random.randint(jax.random.key(seed), (B, T), 0, V)


# --- the masks ---------------------------------------------------------------------------------------------------

def test_locked_dropout_keeps_one_mask_per_sequence_over_time():
  x = jnp.ones((T, B, H))
  dropped = regularizers.locked(x, 0.5, jax.random.key(0), layer=1)
  assert jnp.all(dropped == dropped[:1])  # the same at every step
  assert set(np.unique(dropped).tolist()) == {0.0, 2.0}  # kept entries rescaled by 1 / (1 - p)
  assert not jnp.all(dropped[0] == dropped[0, :1])  # but not the same for every sequence


def test_weight_drop_is_one_mask_per_minibatch_and_fresh_for_the_next():
  w = jnp.ones((H, 4 * H))
  first = regularizers.drop_connect(w, 0.5, jax.random.key(0), layer=0)
  again = regularizers.drop_connect(w, 0.5, jax.random.key(0), layer=0)
  other_step = regularizers.drop_connect(w, 0.5, jax.random.fold_in(jax.random.key(0), 1), layer=0)
  other_layer = regularizers.drop_connect(w, 0.5, jax.random.key(0), layer=1)
  np.testing.assert_array_equal(first, again)
  assert set(np.unique(first).tolist()) == {0.0, 2.0}
  assert not np.array_equal(first, other_step) and not np.array_equal(first, other_layer)


def test_embedding_dropout_drops_whole_rows():
  embed = jnp.ones((V, E))
  dropped = regularizers.embedding_rows(embed, 0.5, jax.random.key(3))
  rows = np.asarray(dropped)
  assert all(len(set(row.tolist())) == 1 for row in rows)  # a row is kept or dropped whole
  assert {0.0, 2.0} == set(np.unique(rows).tolist())


def test_every_mask_is_the_identity_without_a_key_or_a_rate():
  x = jnp.arange(24.0).reshape(2, 3, 4)
  for fn in (lambda r, k: regularizers.locked(x, r, k, 0), lambda r, k: regularizers.drop_connect(x, r, k, 0),
             lambda r, k: regularizers.dropout(x, r, k)):
    assert fn(0.5, None) is x and fn(0.0, jax.random.key(0)) is x


# --- the model in training and evaluation ----------------------------------------------------------------------

def test_no_masks_without_a_key_evaluation_equals_the_unregularized_model():
  model = _model(**ALL_ON)
  params = model.init(jax.random.key(0))
  plain = dataclasses.replace(model, weight_drop=0.0, locked_dropout=0.0, embedding_dropout=0.0, ar=0.0, tar=0.0)
  got, _ = model.apply(params, _tokens())
  want, _ = plain.apply(params, _tokens())
  np.testing.assert_array_equal(got, want)


def test_masks_are_fresh_per_minibatch_key_and_repeat_for_the_same_key():
  model = _model(**ALL_ON)
  params = model.init(jax.random.key(0))
  a, _ = model.apply(params, _tokens(), dropout_rng=jax.random.key(1))
  b, _ = model.apply(params, _tokens(), dropout_rng=jax.random.key(1))
  c, _ = model.apply(params, _tokens(), dropout_rng=jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


@pytest.mark.parametrize("option", ["weight_drop", "locked_dropout", "embedding_dropout"])
def test_each_option_changes_training_outputs_alone(option):
  model = _model(**{option: 0.5})
  params = model.init(jax.random.key(0))
  trained, _ = model.apply(params, _tokens(), dropout_rng=jax.random.key(1))
  evaluated, _ = model.apply(params, _tokens())
  assert not np.allclose(trained, evaluated)


def _weight_drop_loss(model, key):
  def loss(params):
    carry = model.zero_carry(B, params["layers"][0]["W_h"].dtype)
    logits, carry = model.apply(params, _tokens(), carry, dropout_rng=key)
    return jnp.sum(jnp.sin(logits)) + sum(jnp.sum(leaf ** 2) for leaf in jax.tree.leaves(carry))
  return loss


def test_weight_drop_gradients_by_central_differences_in_float64():
  with jax.enable_x64(True):
    model = _model(weight_drop=0.5, num_layers=1)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), model.init(jax.random.key(0)))
    test_util.check_grads(_weight_drop_loss(model, jax.random.key(5)), (params,), order=1, modes=["rev"],
                          atol=1e-6, rtol=1e-6)


def test_weight_drop_zeroes_the_gradient_of_dropped_recurrent_weights():
  model = _model(weight_drop=0.5, num_layers=1)
  params = model.init(jax.random.key(0))
  key = jax.random.key(5)
  grads = jax.grad(_weight_drop_loss(model, key))(params)
  mask = regularizers.drop_connect(jnp.ones_like(params["layers"][0]["W_h"]), 0.5, key, 0)
  dropped = np.asarray(mask) == 0
  assert dropped.any() and (~dropped).any()
  assert np.all(np.asarray(grads["layers"][0]["W_h"])[dropped] == 0.0)
  assert np.any(np.asarray(grads["layers"][0]["W_h"])[~dropped] != 0.0)


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_the_same_key_gives_the_same_masks_whatever_the_recurrence(cell):
  results = {}
  for recurrence in ("scan", "fused_vjp", "pallas"):
    model = _model(cell=cell, recurrence=recurrence, weight_drop=0.4, locked_dropout=0.3, embedding_dropout=0.2)
    params = model.init(jax.random.key(0))
    loss = _weight_drop_loss(model, jax.random.key(9))
    results[recurrence] = (loss(params), jax.grad(loss)(params))
  for recurrence in ("fused_vjp", "pallas"):
    np.testing.assert_allclose(results[recurrence][0], results["scan"][0], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), results[recurrence][1],
                 results["scan"][1])


# --- tied weights, AR / TAR ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("hidden", [E, H])
def test_tied_weights_read_the_embedding_transposed(hidden):
  model = _model(hidden_size=hidden, tie_weights=True, num_layers=1)
  params = model.init(jax.random.key(0))
  assert "W" not in params["head"] and ("proj" in params["head"]) == (hidden != E)
  hs_TBH = jax.random.normal(jax.random.key(1), (T, B, hidden))
  features = hs_TBH @ params["head"]["proj"] if hidden != E else hs_TBH
  np.testing.assert_allclose(model.logits(params, hs_TBH), features @ params["embed"].T + params["head"]["b"],
                             **TOL)
  grads = jax.grad(lambda p: jnp.sum(model.apply(p, _tokens())[0] ** 2))(params)
  rows_seen = np.unique(np.asarray(_tokens()))
  unseen = np.setdiff1d(np.arange(V), rows_seen)
  assert np.all(np.abs(np.asarray(grads["embed"])[unseen]).sum(axis=1) > 0)  # the output end reaches every row


def test_ar_and_tar_are_the_papers_penalties():
  rng = np.random.default_rng(0)
  dropped, raw = rng.standard_normal((T, B, H)), rng.standard_normal((T, B, H))
  want = 2.0 * np.mean(dropped ** 2) + 0.5 * np.mean((raw[1:] - raw[:-1]) ** 2)
  np.testing.assert_allclose(regularizers.activation_penalty(2.0, 0.5, jnp.asarray(dropped), jnp.asarray(raw)),
                             want, rtol=1e-6)


def test_the_penalty_enters_the_gradient_but_not_the_reported_loss():
  from lstm_jax.train import loop, optimizer, state
  c = config_lib.default_config()
  c.optimizer.name = "sgd"; c.optimizer.learning_rate = 0.1; c.optimizer.clip_norm = 0.0  # noqa: E702
  tokens = jax.random.randint(jax.random.key(4), (B, T + 1), 0, V)
  out = {}
  for ar in (0.0, 5.0):
    model = _model(ar=ar, tar=ar, recurrence="fused_vjp")
    sgd = optimizer.make_optimizer(c.optimizer)
    train_state = state.create_train_state(model, sgd, seed=0, batch_size=B)
    new_state, metrics = loop.train_step(train_state, tokens[:, :-1], tokens[:, 1:], model=model, optimizer=sgd,
                                         carry_state=False)
    out[ar] = (float(metrics["nll_sum"]), new_state.params)
  assert out[0.0][0] == pytest.approx(out[5.0][0], rel=1e-6)  # the reported NLL has no penalty in it
  assert not np.allclose(out[0.0][1]["layers"][0]["W_h"], out[5.0][1]["layers"][0]["W_h"])


# --- recurrent dropout ----------------------------------------------------------------------------------------------

def _numpy_lstm_with_recurrent_mask(params, xproj_TBG, mask_BH):
  sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
  h = np.zeros((B, H)); c = np.zeros((B, H)); hs = []  # noqa: E702
  for x in np.asarray(xproj_TBG, np.float64):
    i, f, g, o = np.split(x + (h * mask_BH) @ np.asarray(params["W_h"], np.float64), 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    hs.append(h)
  return np.stack(hs), h, c


def test_recurrent_dropout_matches_a_numpy_lstm_with_the_mask_on_h_in_the_matmul():
  model = _model(recurrent_dropout=0.5, num_layers=1, embed_dim=None)
  params = model.init(jax.random.key(0))
  key = jax.random.key(3)
  tokens = _tokens()
  _, carry = model.apply(params, tokens, dropout_rng=key)
  hs_TBH, _ = model.hidden_states(params, tokens.T, model.zero_carry(B), key)
  layer = params["layers"][0]
  xproj = np.asarray(layer["W_x"])[np.asarray(tokens.T)] + np.asarray(layer["b"])
  mask = np.asarray(regularizers.recurrent_mask(0.5, key, 0, B, H))
  assert {0.0, 2.0} == set(np.unique(mask).tolist())
  want_hs, want_h, want_c = _numpy_lstm_with_recurrent_mask(layer, xproj, mask)
  np.testing.assert_allclose(hs_TBH, want_hs, **TOL)
  np.testing.assert_allclose(carry[0].h, want_h, **TOL)
  np.testing.assert_allclose(carry[0].c, want_c, **TOL)


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_recurrent_dropout_under_fused_vjp_equals_scan_in_values_and_gradients(cell):
  results = {}
  for recurrence in ("scan", "fused_vjp"):
    model = _model(cell=cell, recurrence=recurrence, recurrent_dropout=0.4)
    params = model.init(jax.random.key(0))
    loss = _weight_drop_loss(model, jax.random.key(9))
    results[recurrence] = (loss(params), jax.grad(loss)(params))
  unmasked = _model(cell=cell, recurrence="fused_vjp")
  assert not np.allclose(results["fused_vjp"][0], _weight_drop_loss(unmasked, jax.random.key(9))(params))
  np.testing.assert_allclose(results["fused_vjp"][0], results["scan"][0], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), results["fused_vjp"][1],
               results["scan"][1])


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_recurrent_dropout_gradients_of_the_fused_backward_by_central_differences_in_float64(cell):
  with jax.enable_x64(True):
    model = _model(cell=cell, recurrent_dropout=0.5, num_layers=1, recurrence="fused_vjp")
    params = jax.tree.map(lambda p: p.astype(jnp.float64), model.init(jax.random.key(0)))
    test_util.check_grads(_weight_drop_loss(model, jax.random.key(5)), (params,), order=1, modes=["rev"],
                          atol=1e-6, rtol=1e-6)


def test_auto_takes_the_fused_backward_with_recurrent_dropout_and_never_the_kernel():
  assert _model(recurrent_dropout=0.2, recurrence="auto").recurrence_for(B, T) == "fused_vjp"
  assert _model(recurrent_dropout=0.2, recurrence="auto").candidates() == ("fused_vjp", "scan")
  assert _model(recurrent_dropout=0.2, recurrence="auto", cell="lstm_peephole").candidates() == ("scan",)


# --- refusals -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, words", [
    (dict(recurrent_dropout=0.2, recurrence="pallas"), "recurrence=fused_vjp"),
    (dict(recurrent_dropout=0.2, cell="gru"), "weight_drop"),
    (dict(embedding_dropout=0.1, embed_dim=None), "embed_dim"),
    (dict(tie_weights=True, embed_dim=None), "embed_dim"),
    (dict(weight_drop=1.0), "[0, 1)"),
])
def test_the_scratch_model_refuses_what_it_cannot_honour_in_one_line(settings, words):
  with pytest.raises(ValueError) as error:
    _model(**settings)
  assert words in str(error.value) and "\n" not in str(error.value) and "--config.model." in str(error.value)


@pytest.mark.parametrize("implementation", ["flax", "flax_optimized", "nnx", "cudnn"])
def test_the_other_implementations_refuse_the_options_in_one_line(implementation):
  c = config_lib.default_config()
  c.model.implementation = implementation
  c.model.weight_drop = 0.3
  with pytest.raises(ValueError, match="scratch model only") as error:
    factory.from_config(c.model, V)
  assert "\n" not in str(error.value)
  problems = validation.config_problems(c)
  assert len(problems) == 1 and "implementation=scratch" in problems[0]


def test_the_config_validation_names_each_bad_field():
  c = config_lib.default_config()
  c.model.locked_dropout = 1.5
  c.model.ar = -1.0
  problems = validation.config_problems(c)
  assert any("model.locked_dropout" in p for p in problems) and any("model.ar" in p for p in problems)


def test_every_option_is_off_by_default_and_builds_the_same_model():
  c = config_lib.default_config()
  assert all(not c.model[name] for name in regularizers.OPTIONS)
  model = factory.from_config(c.model, V)
  assert isinstance(model, LanguageModel) and "W" in model.init(jax.random.key(0))["head"]
