"""PyTorch nn.LSTM interop: same weights -> same outputs and final (h, c) for every layer; round trip."""

import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax.cells import lstm
from lstm_jax.interop import torch as torch_interop
from lstm_jax.models.scratch import LanguageModel

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("num_layers, batch_first", [(1, True), (3, False)])
def test_torch_lstm_weights_give_the_same_outputs_and_states(num_layers, batch_first):
  torch.manual_seed(0)
  B, T, I, H = 3, 7, 5, 6
  module = torch.nn.LSTM(I, H, num_layers=num_layers, batch_first=batch_first)
  xs = torch.randn((B, T, I) if batch_first else (T, B, I))
  with torch.no_grad():
    out, (h_n, c_n) = module(xs)
  layers = torch_interop.lstm_from_torch(module.state_dict())
  xs_TBI = jnp.asarray(xs.numpy().transpose(1, 0, 2) if batch_first else xs.numpy())
  for k, params in enumerate(layers):
    carry, xs_TBI = lstm.layer(params, xs_TBI)
    np.testing.assert_allclose(carry.h, h_n[k].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carry.c, c_n[k].numpy(), rtol=1e-5, atol=1e-6)
  expected = out.numpy().transpose(1, 0, 2) if batch_first else out.numpy()
  np.testing.assert_allclose(xs_TBI, expected, rtol=1e-5, atol=1e-6)

  back = torch.nn.LSTM(I, H, num_layers=num_layers, batch_first=batch_first)
  back.load_state_dict({k: torch.from_numpy(v) for k, v in torch_interop.lstm_to_torch(layers).items()})
  with torch.no_grad():
    out_back, _ = back(xs)
  np.testing.assert_allclose(out_back.numpy(), out.numpy(), rtol=1e-5, atol=1e-6)


def test_torch_char_model_converts_to_our_language_model():
  torch.manual_seed(1)
  V, H = 9, 8
  rnn, head = torch.nn.LSTM(V, H, num_layers=2, batch_first=True), torch.nn.Linear(H, V)
  tokens = torch.randint(0, V, (2, 5))
  with torch.no_grad():
    expected = head(rnn(torch.nn.functional.one_hot(tokens, V).float())[0]).numpy()
  model = LanguageModel(vocab_size=V, hidden_size=H, num_layers=2)
  params = {"layers": torch_interop.lstm_from_torch(rnn.state_dict()),
            "head": torch_interop.linear_from_torch(head.state_dict())}
  logits, _ = model.apply(params, jnp.asarray(tokens.numpy()))
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_a_state_dict_without_lstm_weights_is_a_clear_error():
  with pytest.raises(ValueError, match="weight_ih_l0"):
    torch_interop.lstm_from_torch({"weight": np.zeros((2, 2))})
