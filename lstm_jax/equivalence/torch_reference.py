"""The same training in PyTorch: ``torch.nn.LSTM`` + ``torch.nn.Linear`` on one-hot inputs, ``torch.optim``.

From the project's initial weights (``lstm_jax.interop.torch`` maps them: ``weight_ih = W_x^T``,
``weight_hh = W_h^T``, ``bias_ih = b``), the minibatches given (cut by ``reference.sequential_minibatches``), the
state zeroed at each epoch's start and carried, detached, from one minibatch into the next (or zeroed before every
one), the loss ``F.cross_entropy`` (mean over ``[batch, time]``), global-norm clipping and ``torch.optim.Adam`` or
``torch.optim.SGD``. Clipping is ``clip_grad_norm_`` for Adam (as the char-RNN tutorials write it) and, for SGD, the
book's PyTorch ``grad_clipping`` (``g *= theta / |g|`` when ``|g| > theta``), because ``clip_grad_norm_`` divides by
``|g| + 1e-6``: at the book's threshold 0.01, where ``|g|`` is a few hundredths, that changes every SGD step by
~1e-5 relative (6e-5 in the parameters after 40 steps in float64), more than float32 rounding; Adam, being invariant
to the gradient's scale, hardly sees it. ``bias_hh`` is frozen at zero: PyTorch's two biases are one parameter of the
model, and training both would move their sum twice as fast as the project's one bias (and count it twice in the
clipping norm). ``dtype=torch.float64`` gives the run against which every float32 run's rounding error is measured.
Needs ``torch``.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from lstm_jax.equivalence import reference
from lstm_jax.interop import torch as torch_interop


def _modules(initial_params: dict[str, Any], dtype):
  import torch  # noqa: PLC0415
  (layer,) = initial_params["layers"]
  vocab, hidden = layer["W_x"].shape[0], layer["W_h"].shape[0]
  lstm, head = torch.nn.LSTM(vocab, hidden, batch_first=True), torch.nn.Linear(hidden, vocab)
  lstm.load_state_dict({k: torch.from_numpy(v) for k, v in torch_interop.lstm_to_torch((layer,)).items()})
  head.load_state_dict({"weight": torch.from_numpy(np.asarray(initial_params["head"]["W"]).T.copy()),
                        "bias": torch.from_numpy(np.asarray(initial_params["head"]["b"]).copy())})
  lstm.bias_hh_l0.requires_grad_(False)
  return lstm.to(dtype), head.to(dtype)


def to_project(lstm, head) -> dict[str, Any]:
  """The modules' weights in the project's layout (float64 NumPy when the modules are float64)."""
  def array(t):
    return t.detach().cpu().numpy().copy()
  return {"layers": ({"W_x": array(lstm.weight_ih_l0).T, "W_h": array(lstm.weight_hh_l0).T,
                      "b": array(lstm.bias_ih_l0) + array(lstm.bias_hh_l0)},),
          "head": {"W": array(head.weight).T, "b": array(head.bias)}}


def make_optimizer(parameters, recipe: reference.Recipe):
  import torch  # noqa: PLC0415
  if recipe.optimizer == "adam":
    return torch.optim.Adam(parameters, lr=recipe.learning_rate, betas=(reference.ADAM_B1, reference.ADAM_B2),
                            eps=reference.ADAM_EPS)
  if recipe.optimizer == "sgd":
    return torch.optim.SGD(parameters, lr=recipe.learning_rate)
  raise ValueError(f"The PyTorch reference knows 'sgd' and 'adam', not {recipe.optimizer!r}.")


def book_clip(parameters, clip_norm: float) -> None:
  """D2L's ``grad_clipping``: scales the gradients by ``clip_norm / |g|`` when their global norm exceeds it."""
  import torch  # noqa: PLC0415
  norm = torch.sqrt(sum(torch.sum(p.grad ** 2) for p in parameters))
  if norm > clip_norm:
    for p in parameters:
      p.grad.mul_(clip_norm / norm)


def _step(lstm, head, optimizer, parameters, inputs_BT, targets_BT, state, recipe: reference.Recipe, dtype):
  """One minibatch: forward from ``state`` (``(h, c)`` ``[1, B, H]``), backward, clip, update; returns
  ``(loss, detached final state)``."""
  import torch  # noqa: PLC0415
  vocab = head.weight.shape[0]
  x_BTV = torch.nn.functional.one_hot(torch.from_numpy(np.asarray(inputs_BT, np.int64)), vocab).to(dtype)
  hs_BTH, state = lstm(x_BTV, state)
  logits_BTV = head(hs_BTH)
  loss = torch.nn.functional.cross_entropy(logits_BTV.reshape(-1, vocab),
                                           torch.from_numpy(np.asarray(targets_BT, np.int64)).reshape(-1))
  optimizer.zero_grad()
  loss.backward()
  if recipe.clip_norm > 0 and recipe.optimizer == "sgd":
    book_clip(parameters, recipe.clip_norm)
  elif recipe.clip_norm > 0:
    torch.nn.utils.clip_grad_norm_(parameters, recipe.clip_norm)
  optimizer.step()
  return float(loss.detach()), tuple(s.detach() for s in state)


def train(initial_params: dict[str, Any], epochs: Iterable[Sequence[reference.Batch]], recipe: reference.Recipe, *,
          max_steps: int | None = None, snapshot_steps: Iterable[int] = (), dtype=None) -> reference.Trajectory:
  """Trains ``torch.nn.LSTM`` from the project-layout ``initial_params``; the same contract as
  ``reference.train``. ``dtype``: ``torch.float32`` (default) or ``torch.float64``."""
  import torch  # noqa: PLC0415
  dtype = dtype or torch.float32
  lstm, head = _modules(initial_params, dtype)
  parameters = [p for p in (*lstm.parameters(), *head.parameters()) if p.requires_grad]
  optimizer = make_optimizer(parameters, recipe)
  wanted, out, state = set(snapshot_steps), reference.Trajectory(), None
  for starts_epoch, inputs, targets in reference.walk(epochs, max_steps):
    if starts_epoch or not recipe.carry_state:
      state = tuple(torch.zeros(1, inputs.shape[0], lstm.hidden_size, dtype=dtype) for _ in range(2))
    loss, state = _step(lstm, head, optimizer, parameters, inputs, targets, state, recipe, dtype)
    out.losses.append(loss)
    if len(out.losses) in wanted:
      out.snapshots[len(out.losses)] = to_project(lstm, head)
  out.snapshots[len(out.losses)] = to_project(lstm, head)
  return out
