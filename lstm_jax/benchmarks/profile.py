"""Where a train step's time goes: forward-only timings (ours, Flax's LSTMCell, PyTorch) and HLO op counts per
time step in the compiled W1 train steps (``python -m lstm_jax.commands.benchmark --profile``)."""

from __future__ import annotations

import functools
import re
import statistics
import time

import jax
import jax.numpy as jnp

from lstm_jax.models import scratch as model_lib
from lstm_jax.train import loop as train_lib
from lstm_jax.train import loss as loss_lib
from lstm_jax.train import state as train_state_lib
from lstm_jax.benchmarks.train_step import (VOCAB, WORKLOADS, Row, Workload, block, flax_cell_module,
                                            random_tokens, sgd_optimizer, torch_module)


def forward_seconds(workload: Workload, rounds: int = 7, calls: int = 20) -> dict[str, float]:
  """Seconds per forward pass (LSTM + head + loss, no gradient) of our scratch model, Flax's ``LSTMCell`` under
  ``nn.RNN`` and PyTorch's, so that each train step's time splits into forward and backward."""
  model = model_lib.LanguageModel(vocab_size=VOCAB, hidden_size=workload.hidden, num_layers=workload.num_layers,
                                  init_scheme="pytorch")
  params = model.init(jax.random.key(0))
  inputs, targets = (jnp.asarray(a) for a in random_tokens(workload))
  loss = jax.jit(lambda p, x, y: jnp.mean(loss_lib.token_nll(model.apply(p, x)[0], y)))
  flax_lm = flax_cell_module(workload, "LSTMCell")
  flax_params = flax_lm.init(jax.random.key(0), inputs)
  flax_loss = jax.jit(lambda p, x, y: jnp.mean(loss_lib.token_nll(flax_lm.apply(p, x), y)))
  functions = {"scratch": lambda: loss(params, inputs, targets),
               "flax LSTMCell (nn.RNN)": lambda: flax_loss(flax_params, inputs, targets)}
  torch = torch_module()
  if torch is not None:
    lstm = torch.nn.LSTM(VOCAB, workload.hidden, workload.num_layers)
    head = torch.nn.Linear(workload.hidden, VOCAB)
    x_t, y_t = (torch.as_tensor(a.T.copy()).long() for a in random_tokens(workload))

    def torch_forward():
      with torch.no_grad():
        outputs, _ = lstm(torch.nn.functional.one_hot(x_t, VOCAB).float())
        return torch.nn.functional.cross_entropy(head(outputs).reshape(-1, VOCAB), y_t.reshape(-1))

    functions["pytorch"] = torch_forward
  times: dict[str, list[float]] = {name: [] for name in functions}
  for function in functions.values():
    block(function())
  for _ in range(rounds):
    for name, function in functions.items():
      start = time.perf_counter()
      for _ in range(calls):
        result = function()
      block(result)
      times[name].append((time.perf_counter() - start) / calls)
  return {name: statistics.median(values) for name, values in times.items()}


def profile_w1(rows: list[Row], peak: float) -> str:
  """Time per W1 time step against its matmul floor, and HLO instruction counts per scan-step body in the
  compiled W1 train steps (forward and backward loops)."""
  workload = WORKLOADS["W1"]
  recurrent_flops = 3 * 2 * workload.batch * workload.hidden * 4 * workload.hidden  # h@W_h, dgates@W_h^T, dW_h
  lines = [f"W1 matmul floor of the recurrence at {peak / 1e9:.0f} GFLOP/s: {1e6 * recurrent_flops / peak:.0f} us "
           f"per time step (3 [{workload.batch}x{workload.hidden}]x[{workload.hidden}x{4 * workload.hidden}] "
           f"matmuls); measured whole train step per time step:"]
  for row in rows:
    if row.workload == "W1":
      lines.append(f"- {row.implementation}: {1e6 * workload.batch / row.median:.0f} us")
  lines.append("Forward only (logits and loss, no gradient), per time step, median of 7 interleaved rounds:")
  for name, seconds in forward_seconds(workload).items():
    lines.append(f"- {name}: {1e6 * seconds / workload.steps:.0f} us")
  lines.append("HLO ops per time step in the compiled W1 train step (while-loop bodies; parameters, tuples, "
               "get-tuple-element and constants not counted):")
  for recurrence in ("fused_vjp", "scan"):
    model = model_lib.LanguageModel(vocab_size=VOCAB, hidden_size=workload.hidden, recurrence=recurrence)
    optimizer = sgd_optimizer()
    state = train_state_lib.create_train_state(model, optimizer, 0, workload.batch)
    inputs, targets = (jnp.asarray(a) for a in random_tokens(workload))
    step = jax.jit(functools.partial(train_lib.train_step, model=model, optimizer=optimizer, carry_state=False))
    text = step.lower(state, inputs, targets).compile().as_text()
    counts = []
    for body in re.findall(r"body=%?([\w.\-]+)", text):
      start = text.index(f"\n%{body} ")
      computation = text[start:text.index("\n}", start)]
      ops = [line for line in computation.split("\n")[2:]
             if "=" in line and not re.search(r"= \S+ (parameter|get-tuple-element|tuple|constant)\(", line)]
      kinds = sorted({m.group(1) for line in ops if (m := re.search(r"= \S+ ([\w\-]+)\(", line))})
      counts.append(f"{len(ops)} ops ({', '.join(kinds)})")
    lines.append(f"- recurrence={recurrence}: " + "; ".join(counts))
  return "\n".join(lines)
