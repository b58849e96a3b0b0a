"""The "library" model on Flax's own cells: same weights -> same loss curve as the scratch model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import config as config_lib
from lstm_jax.models import factory as models
from lstm_jax.models import library as library_model
from lstm_jax.models import scratch as model_lib
from lstm_jax.train import loop as train
from lstm_jax.train import optimizer as optimizer_lib
from lstm_jax.train import state as train_state_lib


@pytest.mark.parametrize("cell, optimized", [("lstm", False), ("lstm", True), ("gru_reset_after", False),
                                             ("rnn", False)])
@pytest.mark.slow
def test_same_weights_give_the_same_training_curve(cell, optimized):
  scratch = model_lib.LanguageModel(vocab_size=11, hidden_size=8, num_layers=2, cell=cell, init_scheme="flax")
  library = library_model.LibraryLanguageModel(vocab_size=11, hidden_size=8, num_layers=2, cell=cell,
                                               optimized=optimized)
  opt_config = config_lib.default_config().optimizer
  opt_config.learning_rate, opt_config.clip_norm = 1.0, 0.5
  optimizer = optimizer_lib.make_optimizer(opt_config)
  scratch_state = train_state_lib.create_train_state(scratch, optimizer, seed=0, batch_size=3)
  library_params = library_model.from_scratch_params(cell, scratch_state.params)
  library_state = train_state_lib.TrainState(library_params, optimizer.init(library_params), scratch_state.step,
                                   scratch_state.rng, library.zero_carry(3))
  tokens = jax.random.randint(jax.random.key(1), (3, 6 * 7 + 1), 0, 11)
  scratch_losses, library_losses = [], []
  for t in range(6):  # sequential: the carried state flows from each window into the next
    inputs, targets = tokens[:, 7 * t:7 * t + 7], tokens[:, 7 * t + 1:7 * t + 8]
    scratch_state, m1 = train.train_step(scratch_state, inputs, targets, model=scratch, optimizer=optimizer,
                                         carry_state=True)
    library_state, m2 = train.train_step(library_state, inputs, targets, model=library, optimizer=optimizer,
                                         carry_state=True)
    scratch_losses.append(float(m1["nll_sum"]))
    library_losses.append(float(m2["nll_sum"]))
  np.testing.assert_allclose(scratch_losses, library_losses, rtol=2e-5)
  assert scratch_losses[-1] != scratch_losses[0]


def test_config_selects_the_library_model():
  config = config_lib.default_config()
  config.model.implementation = "flax_optimized"
  model = models.from_config(config.model, 7)
  assert isinstance(model, library_model.LibraryLanguageModel) and model.optimized
  params = model.init(jax.random.key(0))
  weights = [v for path, v in jax.tree.flatten_with_path(params["layers"])[0] if path[-1].key == "kernel"]
  assert all(abs(float(jnp.std(w)) - 0.01) < 0.004 for w in weights)  # d2l scheme: N(0, 0.01) like Gluon's
  config.model.implementation = "keras"
  with pytest.raises(ValueError, match="model.implementation"):
    models.from_config(config.model, 7)


def test_pytorch_init_scheme_redraws_every_cell_param_uniformly():
  model = library_model.LibraryLanguageModel(vocab_size=7, hidden_size=64, cell="gru_reset_after",
                                             init_scheme="pytorch")
  bound = 1.0 / 64 ** 0.5
  for leaf in jax.tree.leaves(model.init(jax.random.key(0))["layers"]):
    assert float(jnp.max(jnp.abs(leaf))) <= bound
    assert abs(float(jnp.std(leaf)) - bound / 3 ** 0.5) < 0.25 * bound  # U(-b, b) has std b / sqrt(3)
  with pytest.raises(ValueError, match="init scheme"):
    library_model.LibraryLanguageModel(vocab_size=7, hidden_size=4, init_scheme="glorot").init(jax.random.key(0))


def test_rnn_relu_is_gluons_relu_elman_rnn():
  """Gluon's rnn.RNN defaults to ReLU: h_t = relu(x_t W_x + b + h_{t-1} W_h), checked against NumPy."""
  model = library_model.LibraryLanguageModel(vocab_size=5, hidden_size=3, cell="rnn_relu", init_scheme="pytorch")
  params = model.init(jax.random.key(2))
  tokens = np.array([[0, 3, 1, 4], [2, 2, 0, 1]])
  logits, (h_last,) = model.apply(params, jnp.asarray(tokens))
  cell = {k: np.asarray(v["kernel"], np.float64) for k, v in params["layers"][0].items()}
  bias = np.asarray(params["layers"][0]["i"]["bias"], np.float64)
  h = np.zeros((2, 3))
  for t in range(tokens.shape[1]):
    h = np.maximum(np.eye(5)[tokens[:, t]] @ cell["i"] + bias + h @ cell["h"], 0.0)
  np.testing.assert_allclose(h_last, h, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(logits[:, -1], h @ np.asarray(params["head"]["W"]) + np.asarray(params["head"]["b"]),
                             rtol=1e-5, atol=1e-6)
