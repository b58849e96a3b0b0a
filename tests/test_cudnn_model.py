"""model.implementation=cudnn: refused with a clear message without a CUDA GPU; with cuDNN's pure-JAX reference
(jax.experimental.rnn.lstm_ref) swapped in, it computes the scratch model's logits, carry and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import config as config_lib
from lstm_jax.interop import cudnn
from lstm_jax.models import cudnn as cudnn_model
from lstm_jax.models import factory as models
from lstm_jax.models import scratch as model_lib


def _config(**model):
  config = config_lib.default_config().model
  config.hidden_size, config.num_layers, config.implementation = 8, 2, "cudnn"
  config.update(model)
  return config


@pytest.mark.skipif(cudnn.cudnn_available(), reason="this machine has a CUDA GPU")
def test_without_a_cuda_gpu_it_names_what_runs_here():
  with pytest.raises(ValueError, match="needs a CUDA GPU .* implementations that run here: scratch"):
    models.from_config(_config(), 11)


@pytest.mark.slow
def test_it_equals_the_scratch_model_through_the_reference(monkeypatch):
  monkeypatch.setattr(cudnn_model, "cudnn_layers", cudnn.reference_layers)
  model = models.from_config(_config(), 11)
  scratch = model_lib.LanguageModel(vocab_size=11, hidden_size=8, num_layers=2)
  params = scratch.init(jax.random.key(0))
  params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(1), x.shape), params)
  tokens = jax.random.randint(jax.random.key(2), (3, 5), 0, 11)
  carry = jax.tree.map(lambda x: x + 0.5, scratch.zero_carry(3))
  (logits, final), (ref_logits, ref_final) = model.apply(params, tokens, carry), scratch.apply(params, tokens, carry)
  np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
  for got, want in zip(jax.tree.leaves(final), jax.tree.leaves(ref_final)):
    np.testing.assert_allclose(got, want, atol=1e-5)
  loss = lambda m: lambda p: jnp.sum(jnp.sin(m.apply(p, tokens, carry)[0]))
  for got, want in zip(jax.tree.leaves(jax.grad(loss(model))(params)), jax.tree.leaves(jax.grad(loss(scratch))(params))):
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_it_refuses_what_cudnn_cannot_run(monkeypatch):
  monkeypatch.setattr(cudnn_model, "cudnn_layers", cudnn.reference_layers)
  with pytest.raises(ValueError, match="runs the LSTM only"):
    models.from_config(_config(cell="gru"), 11)
  with pytest.raises(ValueError, match="without dropout"):
    models.from_config(_config(dropout=0.5), 11)
