"""Every form of the language model satisfies the one interface (lstm_jax.models.interface) and keeps its promises:
the zero carry is the default state, dropout only with a key, padded batches end in each sequence's own carry,
and the platform hooks answer."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import config as config_lib
from lstm_jax.models import cudnn, factory, interface, library, nnx_model, scratch

V, H, B, T = 11, 8, 3, 6


def _forms():
  return {
      "scratch": scratch.LanguageModel(vocab_size=V, hidden_size=H, num_layers=2, dropout=0.5),
      "library": library.LibraryLanguageModel(vocab_size=V, hidden_size=H, num_layers=2, dropout=0.5),
      "nnx": nnx_model.NnxLanguageModel(vocab_size=V, hidden_size=H, num_layers=2, dropout=0.5),
      "cudnn": cudnn.CudnnLanguageModel(vocab_size=V, hidden_size=H, num_layers=2, dropout=0.5),
  }


FORMS = sorted(_forms())


def _tokens(seed=0, shape=(B, T)):
  return jax.random.randint(jax.random.key(seed), shape, 0, V)


@pytest.mark.parametrize("name", FORMS)
def test_every_form_is_a_language_model_like(name):
  model = _forms()[name]
  assert isinstance(model, interface.LanguageModelLike)
  wanted = list(inspect.signature(interface.LanguageModelLike.apply).parameters)[1:]  # without self
  assert list(inspect.signature(model.apply).parameters) == wanted
  hash(model)  # static: usable as a jit static argument


def test_the_protocol_rejects_what_lacks_a_method():
  class NoApply:
    vocab_size = hidden_size = num_layers = 1
    cell = "lstm"

    def init(self, key):
      return key

    def zero_carry(self, batch_size, dtype=None):
      return ()

  assert not isinstance(NoApply(), interface.LanguageModelLike)


@pytest.mark.parametrize("name", [n for n in FORMS if n != "cudnn"])
def test_apply_without_a_carry_starts_from_zero_carry_and_drops_only_with_a_key(name):
  model = _forms()[name]
  params = model.init(jax.random.key(0))
  tokens = _tokens()
  logits, carry = model.apply(params, tokens)
  again, _ = model.apply(params, tokens, model.zero_carry(B))
  assert logits.shape == (B, T, V) and len(carry) == 2
  np.testing.assert_array_equal(logits, again)
  dropped, _ = model.apply(params, tokens, dropout_rng=jax.random.key(1))
  assert not np.allclose(dropped, logits)


@pytest.mark.parametrize("name", [n for n in FORMS if n != "cudnn"])
def test_a_padded_batch_ends_in_each_sequences_own_carry(name):
  model = _forms()[name]
  params = model.init(jax.random.key(0))
  tokens = _tokens()
  lengths = jnp.array([T, 2, 4])
  _, carry = model.apply(params, tokens, seq_lengths=lengths)
  for row, length in enumerate(lengths.tolist()):
    _, alone = model.apply(params, tokens[row:row + 1, :length])
    for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(alone)):
      np.testing.assert_allclose(got[row], want[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", FORMS)
def test_the_platform_hooks_answer_on_this_machine(name):
  model = _forms()[name]
  assert model.recurrence_problem() is None
  line = model.recurrence_line(B, T)
  assert line is None or isinstance(line, str)


@pytest.mark.parametrize("implementation", ["scratch", "flax", "nnx"])
def test_the_factory_builds_a_language_model_like(implementation):
  c = config_lib.default_config()
  c.model.implementation = implementation
  if implementation == "nnx":
    c.model.recurrence = "scan"
  assert isinstance(factory.from_config(c.model, V), interface.LanguageModelLike)


def test_the_factory_refuses_cudnn_without_a_gpu_in_one_line():
  c = config_lib.default_config()
  c.model.implementation = "cudnn"
  if jax.default_backend() == "gpu":
    pytest.skip("this machine has a GPU")
  with pytest.raises(ValueError, match="needs a CUDA GPU") as error:
    factory.from_config(c.model, V)
  assert "\n" not in str(error.value)
