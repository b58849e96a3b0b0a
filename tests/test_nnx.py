"""The flax.nnx forms: RecurrentCell under nnx.RNN and RecurrentLayer equal the scratch functions per family, Flax's
own NNX cells (through the converters) and the NumPy reference; the NNX language model is the scratch model in NNX
form: the same init, logits, gradients and loss curve, a plain param pytree, and it trains through the loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from layer_checks import B, FAMILY_NAMES, H, IN, T, TOL  # noqa: F401
from layer_checks import assert_trees_close as _assert_trees_close
from layer_checks import inputs as _inputs
from layer_checks import loss as _loss
from layer_checks import random_params as _random_params
from layer_checks import scratch as _scratch
import numpy_reference
from lstm_jax import cells
from lstm_jax import config as config_lib
from lstm_jax.cells import lstm
from lstm_jax.interop import nnx as nnx_interop
from lstm_jax.models import factory as models
from lstm_jax.models import nnx_layers as nnx_cells
from lstm_jax.models import nnx_model
from lstm_jax.models import scratch as model_lib
from lstm_jax.models import variable_length
from lstm_jax.train import checkpoint as checkpoint_lib
from lstm_jax.train import evaluate as evaluate_lib
from lstm_jax.train import loop as train
from lstm_jax.train import optimizer as optimizer_lib
from lstm_jax.train import state as train_state_lib


def _pure_params(module):
  return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def _functional(module, wrap=lambda p: p):
  """``run(params, xs, **kw)`` calling ``module`` rebuilt around ``wrap(params)`` (a pure param dict) with
  ``nnx.merge``: a pure function of its arrays, for ``jax.grad``."""
  graphdef, param_state, rest = nnx.split(module, nnx.Param, ...)

  def run(params, xs, **kwargs):
    state = jax.tree.map(lambda leaf: leaf, param_state)  # fresh Variables, made inside the caller's trace
    nnx.replace_by_pure_dict(state, wrap(params))
    return nnx.merge(graphdef, state, jax.tree.map(lambda leaf: leaf, rest))(xs, **kwargs)

  return run


def _value_and_grads(run, params, xs):
  """``((carry, outputs), (d loss / d params, d loss / d xs))`` of ``run``, in one compiled function."""
  def loss(p, x):
    carry, outputs = run(p, x)
    return _loss(carry, outputs), (carry, outputs)
  (_, result), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, xs)
  return result, grads


def _forms(name, time_major=False):
  """Each form as ``run(params, xs_BTI) -> (carry, outputs_BTH)`` taking the family's plain params; with
  ``time_major`` also the time-major forms."""
  family = cells.get_family(name)
  cell = lambda: nnx_cells.RecurrentCell(IN, H, cell=name, rngs=nnx.Rngs(0))  # noqa: E731
  rnn = _functional(nnx.RNN(cell(), return_carry=True), lambda p: {"cell": p})
  layer = _functional(nnx_cells.RecurrentLayer(IN, H, cell=name, rngs=0))
  forms = {"scratch": lambda p, xs: _scratch(family, p, xs), "cell_under_nnx_RNN": rnn, "layer": layer}
  if not time_major:
    return forms
  rnn_time_major = _functional(nnx.RNN(cell(), return_carry=True, time_major=True), lambda p: {"cell": p})
  layer_time_major = _functional(nnx_cells.RecurrentLayer(IN, H, cell=name, time_major=True, rngs=0))

  def swapped(run):
    def run_time_major(p, xs):
      carry, outputs = run(p, jnp.swapaxes(xs, 0, 1))
      return carry, jnp.swapaxes(outputs, 0, 1)
    return run_time_major

  return {**forms, "cell_under_nnx_RNN_time_major": swapped(rnn_time_major),
          "layer_time_major": swapped(layer_time_major)}


# ----------------------------------------------------------------------------------------------- cells and layers

@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_nnx_params_are_the_family_pytree_with_the_scratch_init(name):
  family = cells.get_family(name)
  key = jax.random.key(3)
  want = family.init_params(key, IN, H, "pytorch")
  for module in (nnx_cells.RecurrentCell(IN, H, cell=name, init_scheme="pytorch", rngs=key),
                 nnx_cells.RecurrentLayer(IN, H, cell=name, init_scheme="pytorch", rngs=key)):
    got = _pure_params(module)
    assert jax.tree.structure(got) == jax.tree.structure(want) == jax.tree.structure(module.params)
    jax.tree.map(np.testing.assert_array_equal, got, want)
  rngs_key = nnx.Rngs(params=5).params()  # an nnx.Rngs gives the family one key drawn from its params stream
  rnn = nnx.RNN(nnx_cells.RecurrentCell(IN, H, cell=name, init_scheme="pytorch", rngs=nnx.Rngs(params=5)))
  jax.tree.map(np.testing.assert_array_equal, _pure_params(rnn),
               {"cell": family.init_params(rngs_key, IN, H, "pytorch")})


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_all_forms_agree_on_outputs_carry_and_gradients(name):
  params, xs = _random_params(cells.get_family(name)), _inputs()
  forms = _forms(name, time_major=name == "lstm")
  (want_carry, want_outputs), want_grads = _value_and_grads(forms["scratch"], params, xs)
  assert np.abs(np.asarray(want_grads[1])).max() > 1e-3
  for form_name, run in forms.items():
    (carry, outputs), grads = _value_and_grads(run, params, xs)
    assert type(carry) is type(want_carry), form_name
    np.testing.assert_allclose(outputs, want_outputs, **TOL, err_msg=form_name)
    _assert_trees_close(carry, want_carry)
    _assert_trees_close(grads, want_grads)


def test_nnx_grad_of_the_layer_module_is_the_scratch_gradient():
  params, xs = _random_params(lstm), _inputs()
  layer = nnx_cells.RecurrentLayer(IN, H, rngs=0)
  nnx.update(layer, params)
  grads = nnx.grad(lambda module: _loss(*module(xs)))(layer)
  want = jax.grad(lambda p: _loss(*_scratch(lstm, p, xs)))(params)
  _assert_trees_close(nnx.to_pure_dict(grads), want)


def test_lstm_forms_match_numpy_reference():
  params, xs = numpy_reference.random_lstm_params(1, IN, H), _inputs()
  hs_ref, h_ref, c_ref = numpy_reference.lstm_layer(params, np.swapaxes(xs, 0, 1))
  for form_name, run in _forms("lstm", time_major=True).items():
    carry, outputs = run(params, xs)
    assert isinstance(carry, lstm.LSTMCarry), form_name
    np.testing.assert_allclose(outputs, np.swapaxes(hs_ref, 0, 1), **TOL, err_msg=form_name)
    np.testing.assert_allclose(carry.h, h_ref, **TOL, err_msg=form_name)
    np.testing.assert_allclose(carry.c, c_ref, **TOL, err_msg=form_name)


@pytest.mark.parametrize("name, nnx_cell", [("lstm", "LSTMCell"), ("lstm", "OptimizedLSTMCell"),
                                            ("gru_reset_after", "GRUCell"), ("rnn", "SimpleCell")])
def test_flax_nnx_cells_with_converted_params_equal_ours(name, nnx_cell):
  """Flax's own NNX cell under nnx.RNN == our layer: outputs, carry, gradients w.r.t. params and inputs."""
  params, xs = _random_params(cells.get_family(name)), _inputs()
  if name == "gru_reset_after":
    params["b_hn"] = np.zeros_like(params["b_hn"])  # nnx.GRUCell has no recurrent bias in the reset product
  assert cells.get(name).flax_cell in (nnx_cell, "LSTMCell")
  flax_cell = nnx_interop.load_into(getattr(nnx, nnx_cell)(IN, H, rngs=nnx.Rngs(0)), params)
  theirs = _functional(nnx.RNN(flax_cell, return_carry=True), lambda p: {"cell": p})
  ours = _forms(name)["layer"]
  to_nnx, from_nnx = nnx_interop.TO_NNX[nnx_cell], nnx_interop.FROM_NNX[nnx_cell]

  (their_carry, their_outputs), their_grads = _value_and_grads(theirs, to_nnx(params), xs)
  (carry, outputs), grads = _value_and_grads(ours, params, xs)
  np.testing.assert_allclose(their_outputs, outputs, **TOL)
  if name == "lstm":
    their_carry = nnx_interop.carry_from_flax(their_carry)
  _assert_trees_close(their_carry, carry)

  converted = from_nnx(their_grads[0])
  if name == "gru_reset_after":  # b_hn is not an nnx.GRUCell parameter: only its (nonzero) gradient is ours
    del converted["b_hn"], grads[0]["b_hn"]
  _assert_trees_close(converted, grads[0])
  np.testing.assert_allclose(their_grads[1], grads[1], **TOL)


@pytest.mark.parametrize("name, nnx_cell", [("lstm", "LSTMCell"), ("lstm", "OptimizedLSTMCell"),
                                            ("gru_reset_after", "GRUCell"), ("rnn", "SimpleCell")])
def test_converters_round_trip_exactly(name, nnx_cell):
  params = jax.tree.map(jnp.asarray, _random_params(cells.get_family(name)))
  if name == "gru_reset_after":
    params["b_hn"] = jnp.zeros_like(params["b_hn"])
  cell = getattr(nnx, nnx_cell)(IN, H, rngs=nnx.Rngs(0))
  tree = nnx_interop.TO_NNX[nnx_cell](params)
  assert jax.tree.map(jnp.shape, tree) == jax.tree.map(jnp.shape, _pure_params(cell))  # the cell's own layout
  for back in (nnx_interop.FROM_NNX[nnx_cell](tree), nnx_interop.params_of(nnx_interop.load_into(cell, params))):
    assert jax.tree.structure(back) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, back, params)
  their = _pure_params(getattr(nnx, nnx_cell)(IN, H, rngs=nnx.Rngs(1)))  # and from Flax's side
  jax.tree.map(np.testing.assert_array_equal, nnx_interop.TO_NNX[nnx_cell](nnx_interop.FROM_NNX[nnx_cell](their)),
               their)


def test_converters_refuse_what_does_not_fit():
  gru_params = jax.tree.map(jnp.asarray, _random_params(cells.get_family("gru_reset_after")))
  with pytest.raises(ValueError, match="b_hn"):
    nnx_interop.to_nnx_gru(gru_params)
  with pytest.raises(ValueError, match="keys"):
    nnx_interop.to_nnx_simple(gru_params)
  with pytest.raises(ValueError, match="LSTM"):
    nnx_interop.to_nnx_optimized_lstm(gru_params)
  lstm_params = numpy_reference.random_lstm_params(1, IN, H)
  with pytest.raises(ValueError, match="do not fit"):
    nnx_interop.load_into(nnx.LSTMCell(IN + 1, H, rngs=nnx.Rngs(0)), lstm_params)
  with pytest.raises(ValueError, match="No converter"):
    nnx_interop.load_into(nnx_cells.RecurrentCell(IN, H, rngs=0), lstm_params)


def test_given_initial_carry_and_seq_lengths():
  params, xs = numpy_reference.random_lstm_params(1, IN, H), _inputs()
  carry0 = lstm.LSTMCarry(h=jnp.asarray(_inputs(2, (B, H))), c=jnp.asarray(_inputs(3, (B, H))))
  want_carry, want_outputs = _scratch(lstm, params, xs, carry0)
  layer = nnx_cells.RecurrentLayer(IN, H, rngs=0)
  cell = nnx_cells.RecurrentCell(IN, H, rngs=0)
  nnx.update(layer, params)
  nnx.update(cell, params)
  for carry, outputs in (nnx.RNN(cell, return_carry=True)(xs, initial_carry=carry0), layer(xs, carry0)):
    np.testing.assert_allclose(outputs, want_outputs, **TOL)
    _assert_trees_close(carry, want_carry)
  lengths = jnp.array([6, 2, 4])
  want_carry, want_hs = variable_length.layer("lstm", params, jnp.swapaxes(xs, 0, 1), carry0, lengths)
  carry, outputs = layer(xs, carry0, seq_lengths=lengths)
  np.testing.assert_allclose(outputs, jnp.swapaxes(want_hs, 0, 1), **TOL)
  _assert_trees_close(carry, want_carry)


def test_initialize_carry_is_the_family_zero_carry():
  cell, layer = nnx_cells.RecurrentCell(IN, H, rngs=0), nnx_cells.RecurrentLayer(IN, H, rngs=0)
  want = lstm.zero_carry(B, H)
  _assert_trees_close(cell.initialize_carry((B, IN)), want)
  _assert_trees_close(layer.initialize_carry((B, T, IN)), want)
  _assert_trees_close(nnx_cells.RecurrentLayer(IN, H, time_major=True, rngs=0).initialize_carry((T, B, IN)), want)
  extra_batch_dims = cell.initialize_carry((2, B, IN), nnx.Rngs(0))
  assert extra_batch_dims.h.shape == extra_batch_dims.c.shape == (2, B, H)
  assert cell.num_feature_axes == 1


def test_bad_configuration_is_a_clear_error():
  with pytest.raises(ValueError, match="Unknown cell"):
    nnx_cells.RecurrentLayer(IN, H, cell="transformer", rngs=0)
  with pytest.raises(ValueError, match="forget_bias"):
    nnx_cells.RecurrentCell(IN, H, cell="rnn", forget_bias=1.0, rngs=0)
  layer = nnx_cells.RecurrentLayer(IN, H, rngs=0)
  with pytest.raises(ValueError, match=r"\[batch, time, features\]"):
    layer(_inputs()[0])
  with pytest.raises(ValueError, match="5 input features"):
    layer(_inputs(shape=(B, T, IN + 1)))


# ------------------------------------------------------------------------------------------------ language model

def _is_plain(tree) -> bool:
  """Dicts (str keys) and tuples down to jax arrays: nothing NNX-typed."""
  if isinstance(tree, dict):
    return all(isinstance(k, str) and _is_plain(v) for k, v in tree.items()) and type(tree) is dict
  if isinstance(tree, tuple):
    return type(tree) is tuple and all(_is_plain(v) for v in tree)
  return isinstance(tree, jax.Array)


@pytest.mark.parametrize("settings", [dict(num_layers=2, dropout=0.5),
                                      dict(cell="gru_reset_after", embed_dim=3, init_scheme="pytorch"),
                                      dict(cell="lstm_peephole", forget_bias=1.0, init_scheme="flax")])
def test_nnx_model_is_the_scratch_model(settings):
  """Same init for a key, exactly; from the same weights the same logits, carry and gradients (dropout too)."""
  scratch = model_lib.LanguageModel(vocab_size=7, hidden_size=H, **settings)
  model = nnx_model.NnxLanguageModel(vocab_size=7, hidden_size=H, **settings)
  scratch_params = scratch.init(jax.random.key(0))
  params = model.init(jax.random.key(0))
  assert _is_plain(params) and all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(params))
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, model.shapes())
  converted = nnx_model.from_scratch_params(scratch_params)
  jax.tree.map(np.testing.assert_array_equal, converted, params)
  jax.tree.map(np.testing.assert_array_equal, nnx_model.to_scratch_params(params), scratch_params)
  assert jax.tree.structure(nnx_model.to_scratch_params(params)) == jax.tree.structure(scratch_params)

  params = nnx_model.from_scratch_params(jax.tree.map(lambda x: x + 0.2 * jnp.asarray(_inputs(4, x.shape)),
                                                      scratch_params))
  scratch_params = nnx_model.to_scratch_params(params)
  tokens = jax.random.randint(jax.random.key(1), (B, T), 0, 7)
  carry = jax.tree.map(lambda x: x + 0.1, scratch.zero_carry(B))
  rng = jax.random.key(2)

  def run(m, p):
    def loss(p):
      logits, new_carry = m.apply(p, tokens, carry, dropout_rng=rng)
      return jnp.sum(jnp.sin(logits)) + sum(jnp.sum(leaf ** 2) for leaf in jax.tree.leaves(new_carry)), (
          logits, new_carry)
    (_, outputs), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(p)
    return outputs, grads

  (want_logits, want_carry), want_grads = run(scratch, scratch_params)
  (logits, new_carry), grads = run(model, params)
  np.testing.assert_allclose(logits, want_logits, **TOL)
  _assert_trees_close(new_carry, want_carry)
  _assert_trees_close(model.zero_carry(B), scratch.zero_carry(B))
  _assert_trees_close(grads, nnx_model.from_scratch_params(want_grads))


def test_nnx_model_takes_padded_batches_like_the_scratch_model():
  scratch = model_lib.LanguageModel(vocab_size=7, hidden_size=H, num_layers=2)
  model = nnx_model.NnxLanguageModel(vocab_size=7, hidden_size=H, num_layers=2)
  params = scratch.init(jax.random.key(0))
  tokens, lengths = jax.random.randint(jax.random.key(1), (B, T), 0, 7), jnp.array([6, 1, 3])
  want = scratch.apply(params, tokens, seq_lengths=lengths)
  _assert_trees_close(model.apply(nnx_model.from_scratch_params(params), tokens, seq_lengths=lengths), want)


def test_nnx_model_refuses_params_of_another_structure():
  model = nnx_model.NnxLanguageModel(vocab_size=7, hidden_size=H)
  scratch_params = model_lib.LanguageModel(vocab_size=7, hidden_size=H).init(jax.random.key(0))
  with pytest.raises(ValueError, match="from_scratch_params"):
    model.apply(scratch_params, jnp.zeros((B, T), jnp.int32))


@pytest.mark.parametrize("cell, num_layers, dropout", [("lstm", 2, 0.0), ("gru", 1, 0.0),
                                                        pytest.param("rnn", 2, 0.3, marks=pytest.mark.slow)])
def test_nnx_model_follows_the_scratch_loss_curve(cell, num_layers, dropout):
  """Five clipped-SGD steps with the carried state, from the same weights: the same losses (rtol 1e-5). The
  scratch LSTM and RNN run their hand-written backward (recurrence auto), the NNX model autodiff through scan."""
  scratch = model_lib.LanguageModel(vocab_size=11, hidden_size=8, num_layers=num_layers, cell=cell,
                                    init_scheme="flax", dropout=dropout)
  model = nnx_model.NnxLanguageModel(vocab_size=11, hidden_size=8, num_layers=num_layers, cell=cell,
                                     init_scheme="flax", dropout=dropout)
  opt_config = config_lib.default_config().optimizer
  opt_config.learning_rate, opt_config.clip_norm = 1.0, 0.5
  optimizer = optimizer_lib.make_optimizer(opt_config)
  scratch_state = train_state_lib.create_train_state(scratch, optimizer, seed=0, batch_size=3)
  params = jax.tree.map(jnp.copy, nnx_model.from_scratch_params(scratch_state.params))  # the steps donate buffers
  nnx_state = train_state_lib.TrainState(params, optimizer.init(params), jnp.copy(scratch_state.step),
                                         jax.random.clone(scratch_state.rng), model.zero_carry(3))
  scratch_step = train.compile_train_step(scratch, optimizer, carry_state=True)
  nnx_step = train.compile_train_step(model, optimizer, carry_state=True)
  tokens = jax.random.randint(jax.random.key(1), (3, 5 * 7 + 1), 0, 11)
  scratch_losses, nnx_losses = [], []
  for t in range(5):
    inputs, targets = tokens[:, 7 * t:7 * t + 7], tokens[:, 7 * t + 1:7 * t + 8]
    scratch_state, m1 = scratch_step(scratch_state, inputs, targets)
    nnx_state, m2 = nnx_step(nnx_state, inputs, targets)
    scratch_losses.append(float(m1["nll_sum"]))
    nnx_losses.append(float(m2["nll_sum"]))
  np.testing.assert_allclose(nnx_losses, scratch_losses, rtol=1e-5)
  assert scratch_losses[-1] != scratch_losses[0]
  assert _is_plain(nnx_state.params)
  _assert_trees_close(nnx_model.to_scratch_params(nnx_state.params), scratch_state.params, rtol=1e-4, atol=1e-6)


def test_config_selects_the_nnx_model():
  config = config_lib.default_config()
  config.model.implementation, config.model.num_layers, config.model.hidden_size = "nnx", 2, 8
  config.model.embed_dim, config.model.unroll, config.model.recurrence = 4, 2, "scan"
  model = models.from_config(config.model, 7)
  assert model == nnx_model.NnxLanguageModel(vocab_size=7, hidden_size=8, num_layers=2, embed_dim=4, unroll=2)
  assert _is_plain(model.init(jax.random.key(0)))
  for field, value in (("recurrence", "fused_vjp"), ("matmul_dtype", "bfloat16")):
    bad = config_lib.default_config().model
    bad.implementation = "nnx"
    bad[field] = value
    with pytest.raises(ValueError, match=f"model.{field}={value}"):
      models.from_config(bad, 7)


@pytest.mark.slow
def test_tiny_run_trains_checkpoints_and_evaluates(tmp_path, tiny_text):
  """train_and_evaluate with implementation=nnx; the checkpoint's params are the trained ones, as the scratch
  model's would be from the same seed (same init, same steps), and they evaluate."""
  text_path = tmp_path / "corpus.txt"
  text_path.write_text(tiny_text)
  config = config_lib.default_config()
  config.data.corpus, config.data.edition = str(text_path), "raw"
  config.data.max_tokens, config.data.num_val_tokens = 400, 120
  config.data.batch_size, config.data.num_steps = 4, 8
  config.model.implementation, config.model.hidden_size, config.model.recurrence = "nnx", 16, "scan"
  config.optimizer.learning_rate, config.optimizer.clip_norm = 1.0, 1.0
  config.train.num_epochs, config.train.generate_every_epochs, config.train.quiet = 2, 0, True
  config.generate.prefixes, config.generate.num_tokens = ("the ", "a"), 5
  summary = train.train_and_evaluate(config, str(tmp_path / "nnx"))
  model, params, _, _ = checkpoint_lib.load_params(tmp_path / "nnx")
  assert isinstance(model, nnx_model.NnxLanguageModel) and _is_plain(jax.tree.map(jnp.asarray, params))

  config.model.implementation = "scratch"
  train.train_and_evaluate(config, str(tmp_path / "scratch"))
  _, scratch_params, _, _ = checkpoint_lib.load_params(tmp_path / "scratch")
  _assert_trees_close(nnx_model.to_scratch_params(params), scratch_params, rtol=1e-4, atol=1e-6)

  from lstm_jax.data import corpora, pipeline  # noqa: PLC0415
  config.model.implementation = "nnx"
  val_batches = pipeline.validation_batches(config, corpora.load(config.data))
  evaluation = evaluate_lib.evaluate_batches(model, params, val_batches, carry_state=True)
  assert evaluation.perplexity == pytest.approx(summary["val_perplexity"], rel=1e-5)
