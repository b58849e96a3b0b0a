"""An independent PyTorch rerun of a d2l-zh 1.x scratch row, trained on exactly our JAX runs' minibatches.

``python -m lstm_jax.commands.crosscheck --experiment=d2l_jaychou.py:model=gru,impl=scratch --num_seeds=3``

The model is the book's scratch code (``lstm_jax/d2l/book_tables.md`` section 3.1-3.4) written again in PyTorch
float32, sharing nothing with ``lstm_jax.models.scratch`` but the data: every epoch's minibatches come from
``pipeline.epoch_batches``, so the data order is our runs'. Parameters are the book's ``get_params`` order, per gate
``W_x* [V, H]``, ``W_h* [H, H]`` ~ N(0, 0.01) (``torch.randn * 0.01`` after ``torch.manual_seed(seed)``) and
``b_* [H]`` = 0, then ``W_hq [H, V]``, ``b_q [V]`` = 0. Inputs are one-hot; ``one_hot(x) @ W_x`` is computed as the row
gather ``W_x[x]`` (the same numbers). The state is zeroed at each epoch's start and carried, detached, between
minibatches when ``pipeline.carries_state`` (else zeroed before every minibatch); the loss is the mean cross-entropy
over batch*time; gradients are clipped on their global norm and applied by plain SGD ``p -= lr * g``. The perplexity
is exp of the token-weighted mean loss over each epoch, as the book prints it. Needs ``torch`` (not a dependency of
the package).
"""

from __future__ import annotations

import math
import time

import numpy as np

from lstm_jax.d2l import rows as d2l_rows
from lstm_jax.data import pipeline
from lstm_jax.models import factory as models
from lstm_jax.train import optimizer as optimizer_lib
from lstm_jax.train import state as train_state_lib

GATES = {"rnn": ("h",), "gru": ("z", "r", "h"), "lstm": ("i", "f", "o", "c")}  # the book's get_params order
FUSED_BLOCKS = {"rnn": "h", "gru": "rzh", "lstm": "ifco"}  # the gate blocks of our fused [*, G*H] matrices, in order


def init_params(cell: str, vocab_size: int, hidden_size: int, seed: int) -> dict:
  """The book's scratch parameters (float32 leaves with ``requires_grad``), drawn in its order."""
  import torch  # noqa: PLC0415
  torch.manual_seed(seed)
  params = {}
  for gate in GATES[cell]:
    params[f"W_x{gate}"] = torch.randn(vocab_size, hidden_size) * 0.01
    params[f"W_h{gate}"] = torch.randn(hidden_size, hidden_size) * 0.01
    params[f"b_{gate}"] = torch.zeros(hidden_size)
  params["W_hq"], params["b_q"] = torch.randn(hidden_size, vocab_size) * 0.01, torch.zeros(vocab_size)
  return {name: p.requires_grad_() for name, p in params.items()}


def from_ours(cell: str, params: dict) -> dict:
  """Our one-layer scratch params (``layers[0]``: ``W_x [V, G*H]``, ``W_h [H, G*H]``, ``b [G*H]``; ``head``:
  ``W [H, V]``, ``b [V]``) -> the book's per-gate tensors (float32, ``requires_grad``)."""
  import torch  # noqa: PLC0415
  layer, hidden, out = params["layers"][0], params["layers"][0]["W_h"].shape[0], {}
  for k, gate in enumerate(FUSED_BLOCKS[cell]):
    block = slice(k * hidden, (k + 1) * hidden)
    out[f"W_x{gate}"], out[f"W_h{gate}"], out[f"b_{gate}"] = layer["W_x"][:, block], layer["W_h"][:, block], \
        layer["b"][block]
  out["W_hq"], out["b_q"] = params["head"]["W"], params["head"]["b"]
  return {name: torch.tensor(np.asarray(value)).requires_grad_() for name, value in out.items()}


def zero_state(cell: str, batch_size: int, hidden_size: int) -> tuple:
  """``(H,)`` or, for the LSTM, ``(H, C)``; each ``[B, H]`` zeros."""
  import torch  # noqa: PLC0415
  return tuple(torch.zeros(batch_size, hidden_size) for _ in range(2 if cell == "lstm" else 1))


def step(cell: str, p: dict, x_B, state: tuple) -> tuple:
  """One time step of the book's cell: token ids ``x [B]`` and ``state`` (``[B, H]`` each) -> new state."""
  def gate(g, h, act):  # act(X W_xg + H W_hg + b_g), with X one-hot
    return act(p[f"W_x{g}"][x_B] + h @ p[f"W_h{g}"] + p[f"b_{g}"])
  h = state[0]
  if cell == "rnn":
    return (gate("h", h, lambda a: a.tanh()),)
  if cell == "gru":
    z, r = gate("z", h, lambda a: a.sigmoid()), gate("r", h, lambda a: a.sigmoid())
    h_tilde = (p["W_xh"][x_B] + (r * h) @ p["W_hh"] + p["b_h"]).tanh()
    return (z * h + (1 - z) * h_tilde,)
  i, f, o = (gate(g, h, lambda a: a.sigmoid()) for g in "ifo")
  c = f * state[1] + i * gate("c", h, lambda a: a.tanh())
  return (o * c.tanh(), c)


def forward(cell: str, p: dict, inputs_BT, state: tuple) -> tuple:
  """Tokens ``[B, T]`` -> ``(logits [T*B, V], final state)``; time-major rows, as the book concatenates them."""
  import torch  # noqa: PLC0415
  outputs = []
  for x_B in inputs_BT.T:
    state = step(cell, p, x_B, state)
    outputs.append(state[0] @ p["W_hq"] + p["b_q"])
  return torch.cat(outputs), state


def train_step(cell: str, p: dict, inputs_BT, targets_BT, state: tuple, lr: float, clip_norm: float):
  """One minibatch: mean CE over ``B*T``, global-norm clipping, ``p -= lr * g``. Returns ``(loss, new state)``."""
  import torch  # noqa: PLC0415
  logits, state = forward(cell, p, inputs_BT, state)
  loss = torch.nn.functional.cross_entropy(logits, targets_BT.T.reshape(-1))
  grads = torch.autograd.grad(loss, list(p.values()))
  norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
  scale = clip_norm / norm if 0 < clip_norm < norm else 1.0
  with torch.no_grad():
    for param, g in zip(p.values(), grads):
      param -= lr * scale * g
  return loss.item(), tuple(s.detach() for s in state)


def check_config(config) -> None:
  """Raises ValueError, naming what is off, unless the config is a one-layer d2l scratch model trained by SGD."""
  m = config.model
  problems = []
  if m.get("implementation", "scratch") != "scratch":
    problems.append(f"model.implementation={m.implementation!r} (only the book's scratch models)")
  if m.cell not in GATES:
    problems.append(f"model.cell={m.cell!r} (supported: {', '.join(GATES)})")
  if m.num_layers != 1 or m.get("embed_dim") is not None or m.get("dropout", 0) or m.get("init_scheme") != "d2l":
    problems.append("num_layers/embed_dim/dropout/init_scheme other than 1/None/0/'d2l'")
  if config.optimizer.name != "sgd":
    problems.append(f"optimizer.name={config.optimizer.name!r} (only plain SGD)")
  if problems:
    raise ValueError("The PyTorch cross-check covers one-layer d2l scratch models with SGD; this config has " +
                         "; ".join(problems) + ".")


def run_seed(config, corpus, seed: int, report_epochs, init: str = "torch") -> dict:
  """Trains one seed; returns ``{"perplexity": {epoch: value}, "wall_s": seconds}``. ``init="ours"`` starts from
  the weights ``train_state_lib.create_train_state`` draws for the seed (the JAX run's own start)."""
  import torch  # noqa: PLC0415
  from lstm_jax.models import scratch as model_lib  # noqa: PLC0415 (imports JAX)
  from lstm_jax.train import loop as train  # noqa: PLC0415
  config.seed = seed
  cell, hidden, batch_size = config.model.cell, config.model.hidden_size, config.data.batch_size
  carry = pipeline.carries_state(config.data)
  if init == "ours":
    model = models.from_config(config.model, len(corpus.vocab))
    optimizer = optimizer_lib.make_optimizer(config.optimizer)
    params = from_ours(cell, train_state_lib.create_train_state(model, optimizer, seed, batch_size).params)
  else:
    params = init_params(cell, len(corpus.vocab), hidden, seed)
  opt, num_epochs, every = config.optimizer, config.train.num_epochs, config.train.log_every_epochs
  perplexity, start = {}, time.perf_counter()
  for epoch in range(1, num_epochs + 1):
    state, nll_sum, tokens = zero_state(cell, batch_size, hidden), 0.0, 0
    for inputs, targets in pipeline.epoch_batches(config, corpus, epoch):
      if not carry:
        state = zero_state(cell, inputs.shape[0], hidden)
      inputs, targets = torch.from_numpy(inputs.astype(np.int64)), torch.from_numpy(targets.astype(np.int64))
      loss, state = train_step(cell, params, inputs, targets, state, opt.learning_rate, opt.clip_norm)
      nll_sum, tokens = nll_sum + loss * targets.numel(), tokens + targets.numel()
    ppl = math.exp(nll_sum / tokens) if nll_sum / tokens < 700 else math.inf
    if epoch in report_epochs:
      perplexity[epoch] = ppl
    if train.is_due(epoch, every, num_epochs):
      print(f"seed {seed}  epoch {epoch:4d}  perplexity {ppl:.6f}  {time.perf_counter() - start:.1f} s", flush=True)
  return {"perplexity": perplexity, "wall_s": time.perf_counter() - start}


def table(experiment: str, epochs, results: dict, book: dict | None, init: str = "torch") -> list[str]:
  """Markdown: a line per seed, mean ± std (ddof 1) per epoch, and the book's line when the row has one."""
  start = "our JAX run's initial weights" if init == "ours" else "the book's init drawn by torch"
  lines = [f"PyTorch cross-check of `{experiment}` (minibatches from `pipeline.epoch_batches`; {start})", "",
           "| seed | " + " | ".join(f"@{e}" for e in epochs) + " | wall s |", "|---" * (len(epochs) + 2) + "|"]
  for seed, r in results.items():
    lines.append(f"| {seed} | " + " | ".join(f"{r['perplexity'][e]:.4f}" for e in epochs) +
                 f" | {r['wall_s']:.0f} |")
  cells = []
  for e in epochs:
    values = np.array([r["perplexity"][e] for r in results.values()])
    cells.append(f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}")
  walls = [r["wall_s"] for r in results.values()]
  lines.append("| mean ± std | " + " | ".join(cells) + f" | {np.mean(walls):.0f} |")
  if book:
    lines.append("| book | " + " | ".join(f"{book[e]:.4f}" if e in book else "" for e in epochs) + " | |")
  return lines


def crosscheck(experiment: str, num_seeds: int = 3, init: str = "torch", epochs: list[int] | None = None,
               torch_threads: int = 1) -> str:
  """Trains ``num_seeds`` PyTorch runs of a scratch row's config and returns the Markdown table."""
  try:
    import torch  # noqa: PLC0415
  except ImportError:
    raise SystemExit("The PyTorch cross-check needs torch: pip install torch==2.13.0") from None
  from lstm_jax.data import corpora  # noqa: PLC0415
  from lstm_jax.train import loop as train  # noqa: PLC0415
  torch.set_num_threads(torch_threads)
  config = d2l_rows.load_config(experiment)
  check_config(config)
  corpus = corpora.load(config.data)
  rows = [row for row in d2l_rows.ROWS.values() if row.experiment == experiment]
  book = rows[0].book if rows else None
  every, num_epochs = config.train.log_every_epochs, config.train.num_epochs
  default_epochs = sorted(book) if book else [e for e in range(1, num_epochs + 1) if train.is_due(e, every, num_epochs)]
  epochs = sorted(epochs) if epochs else default_epochs
  print(f"{experiment}: cell {config.model.cell}, vocab {len(corpus.vocab)}, {num_epochs} epochs, "
        f"row {rows[0].name if rows else '(none)'}", flush=True)
  results = {seed: run_seed(config, corpus, seed, set(epochs), init) for seed in range(num_seeds)}
  return "\n".join(table(experiment, epochs, results, book, init)) + "\n"
