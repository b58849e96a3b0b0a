"""Train-step and generation speed: our LSTM against Flax's cells and PyTorch's ``nn.LSTM``, on this machine.

    python -m lstm_jax.benchmark            # all workloads, 7 rounds (a few minutes on 2 cores)
    python -m lstm_jax.benchmark --quick    # 3 shorter rounds
    python -m lstm_jax.benchmark --workloads=W1 --markdown=/tmp/bench.md --profile

Workloads (vocabulary 28, fp32):

- W1, the book's: 1 layer x 256, batch 32, 35 steps; W2, char-RNN size: 2 layers x 512, batch 64, 100 steps.
  One full train step each: one-hot inputs, LSTM, dense output layer, token-mean cross-entropy, backward,
  global-norm clipping and an SGD update, from a zero state.
- W3, generation: hidden 256, batch 1, 1000 tokens. Ours decodes greedily inside one compiled loop
  (``lstm_jax.generate.generate_ids``); PyTorch runs the 1000 steps as one teacher-forced forward call, and as
  the book's per-token Python loop.

Implementations: the scratch model (``lstm_jax.model``) with ``recurrence`` "scan" (autodiff through
``lax.scan``) and "fused_vjp" (hand-written backward, ``lstm_jax.cells.lstm_fast``); our linen module
(``lstm_jax.linen.RecurrentLayer``); Flax ``LSTMCell`` and ``OptimizedLSTMCell`` under ``nn.RNN``; PyTorch
``nn.LSTM`` + ``nn.Linear`` + ``clip_grad_norm_`` + SGD when torch is installed (``torch.set_num_threads`` = cores).

Method: every implementation is compiled and warmed up first (compile time reported on its own), then all of
them run in interleaved rounds, each timing enough calls for ~0.5 s (0.2 s with ``--quick``). The table gives the
median and min-max over rounds; "x PyTorch" is the median over rounds of the per-round speed ratio (> 1: faster
than PyTorch; for W3 the latency ratio PyTorch one-call / ours). "% peak" is model FLOP/s (3x the forward's
matmul FLOPs; the one-hot input projection is a gather and counts 0) over the fp32 matmul rate this command
measures (best of several 2048^3 XLA matmuls). The machine may be shared: read ratios, not absolute numbers;
rows whose rounds spread by more than 25% are marked "(noisy)" and the target check then warns. PyTorch's
OpenMP threads slow down sharply when another process takes a core, so rerun on a quiet machine.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from lstm_jax import generate as generate_lib
from lstm_jax import loss as loss_lib
from lstm_jax import model as model_lib
from lstm_jax import train as train_lib

_QUICK = flags.DEFINE_bool("quick", False, "3 short rounds instead of 7 (about a minute of timing on 2 cores).")
_WORKLOADS = flags.DEFINE_list("workloads", ["W1", "W2", "W3"], "Workloads to run: W1, W2, W3.")
_ROUNDS = flags.DEFINE_integer("rounds", 0, "Interleaved timing rounds (0: 7, or 3 with --quick).")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Also write the Markdown table to this file.")
_THREADS = flags.DEFINE_integer("threads", 0, "PyTorch threads (0: the cores this process may use).")
_PROFILE = flags.DEFINE_bool("profile", False, "Also print HLO op counts per scan step of the W1 scratch steps.")

VOCAB = 28
LEARNING_RATE = 1.0
CLIP_NORM = 1.0
GENERATE_TOKENS = 1000


@dataclasses.dataclass(frozen=True)
class Workload:
  name: str
  description: str
  num_layers: int
  hidden: int
  batch: int
  steps: int

  def train_flops_per_token(self) -> float:
    """3x the forward's matmul FLOPs per token (layer 0's one-hot projection is a gather: 0)."""
    gates = 4 * self.hidden
    forward = sum(2 * self.hidden * gates + (2 * self.hidden * gates if layer > 0 else 0)
                  for layer in range(self.num_layers)) + 2 * self.hidden * VOCAB
    return 3.0 * forward


WORKLOADS = {
    "W1": Workload("W1", "book: 1x256, batch 32, 35 steps", 1, 256, 32, 35),
    "W2": Workload("W2", "char-RNN: 2x512, batch 64, 100 steps", 2, 512, 64, 100),
    "W3": Workload("W3", "generation: 256, batch 1, 1000 tokens", 1, 256, 1, GENERATE_TOKENS),
}


@dataclasses.dataclass
class Runner:
  """One implementation of one workload: ``call()`` does one unit of work and returns something to wait on."""
  name: str
  call: Callable[[], Any]
  units_per_call: int           # tokens per call
  is_reference: bool = False    # the PyTorch row the ratios divide by
  compile_s: float = float("nan")
  iterations: int = 1
  rates: list[float] = dataclasses.field(default_factory=list)  # tokens/s per round


def _block(result) -> None:
  """Waits for JAX's asynchronous dispatch; PyTorch on CPU has already finished."""
  if isinstance(result, (jax.Array, tuple, list, dict)):
    jax.block_until_ready(result)


def _timed_call(runner: Runner) -> float:
  start = time.perf_counter()
  _block(runner.call())
  return time.perf_counter() - start


def _tokens(workload: Workload, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  return (rng.integers(0, VOCAB, (workload.batch, workload.steps)).astype(np.int32),
          rng.integers(0, VOCAB, (workload.batch, workload.steps)).astype(np.int32))


def _optimizer() -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(CLIP_NORM), optax.sgd(LEARNING_RATE))


# ---------------------------------------------------------------------------------------------------- train steps


def scratch_train_runner(workload: Workload, recurrence: str) -> Runner:
  """Our model and our own jitted ``lstm_jax.train.train_step`` (state donated, zero initial carry)."""
  model = model_lib.LanguageModel(vocab_size=VOCAB, hidden_size=workload.hidden, num_layers=workload.num_layers,
                                  init_scheme="pytorch", recurrence=recurrence)
  optimizer = _optimizer()
  state = [train_lib.create_train_state(model, optimizer, seed=0, batch_size=workload.batch)]
  step = train_lib.compile_train_step(model, optimizer, carry_state=False)
  inputs, targets = (jnp.asarray(a) for a in _tokens(workload))

  def call():
    state[0], metrics = step(state[0], inputs, targets)
    return metrics["nll_sum"]

  return Runner(f"scratch, recurrence={recurrence}", call, workload.batch * workload.steps)


def _flax_train_runner(name: str, module, workload: Workload) -> Runner:
  """A Flax module ``tokens [B, T] -> logits [B, T, V]`` under the same jitted step as ours."""
  inputs, targets = (jnp.asarray(a) for a in _tokens(workload))
  params = module.init(jax.random.key(0), inputs)["params"]
  optimizer = _optimizer()

  def step(params, opt_state, inputs_BT, targets_BT):
    def loss_fn(params):
      logits = module.apply({"params": params}, inputs_BT)
      return jnp.mean(loss_lib.token_nll(logits, targets_BT))
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  jitted = jax.jit(step, donate_argnums=(0, 1))
  state = [params, optimizer.init(params)]

  def call():
    state[0], state[1], loss = jitted(state[0], state[1], inputs, targets)
    return loss

  return Runner(name, call, workload.batch * workload.steps)


def flax_cell_module(workload: Workload, cell_name: str):
  """The workload's language model from a Flax cell under ``nn.RNN``: ``tokens [B, T] -> logits [B, T, V]``."""
  import flax.linen as nn

  cell_type = getattr(nn, cell_name)

  class FlaxCellLM(nn.Module):
    @nn.compact
    def __call__(self, tokens_BT):
      x = jax.nn.one_hot(tokens_BT, VOCAB)
      for _ in range(workload.num_layers):
        x = nn.RNN(cell_type(workload.hidden))(x)
      return nn.Dense(VOCAB)(x)

  return FlaxCellLM()


def flax_cell_train_runner(workload: Workload, cell_name: str) -> Runner:
  return _flax_train_runner(f"flax {cell_name} (nn.RNN)", flax_cell_module(workload, cell_name), workload)


def linen_train_runner(workload: Workload) -> Runner | None:
  try:
    from lstm_jax import linen as our_linen
  except ImportError:
    return None
  import flax.linen as nn

  class OurLinenLM(nn.Module):
    @nn.compact
    def __call__(self, tokens_BT):
      x = jax.nn.one_hot(tokens_BT, VOCAB)
      for _ in range(workload.num_layers):
        _, x = our_linen.RecurrentLayer(hidden_size=workload.hidden, init_scheme="pytorch")(x)
      return nn.Dense(VOCAB)(x)

  return _flax_train_runner("lstm_jax.linen RecurrentLayer", OurLinenLM(), workload)


def _torch():
  try:
    import torch
  except ImportError:
    return None
  return torch


def torch_train_runner(workload: Workload) -> Runner | None:
  torch = _torch()
  if torch is None:
    return None
  torch.manual_seed(0)
  lstm = torch.nn.LSTM(VOCAB, workload.hidden, workload.num_layers)
  head = torch.nn.Linear(workload.hidden, VOCAB)
  parameters = list(lstm.parameters()) + list(head.parameters())
  optimizer = torch.optim.SGD(parameters, lr=LEARNING_RATE)
  inputs, targets = (torch.as_tensor(a.T.copy()).long() for a in _tokens(workload))  # time-major, as nn.LSTM

  def call():
    outputs_TBH, _ = lstm(torch.nn.functional.one_hot(inputs, VOCAB).float())
    loss = torch.nn.functional.cross_entropy(head(outputs_TBH).reshape(-1, VOCAB), targets.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, CLIP_NORM)
    optimizer.step()

  return Runner("pytorch nn.LSTM", call, workload.batch * workload.steps, is_reference=True)


# ---------------------------------------------------------------------------------------------------- generation


def scratch_generate_runner(workload: Workload, recurrence: str) -> Runner:
  model = model_lib.LanguageModel(vocab_size=VOCAB, hidden_size=workload.hidden, init_scheme="pytorch",
                                  recurrence=recurrence)
  params = model.init(jax.random.key(0))
  prefix = jnp.zeros((1, 1), jnp.int32)
  key = jax.random.key(1)
  call = functools.partial(generate_lib.generate_ids, model, params, prefix, key, num_tokens=workload.steps)
  return Runner(f"scratch greedy, one compiled loop ({recurrence})", call, workload.steps)


def torch_generate_runners(workload: Workload) -> list[Runner]:
  torch = _torch()
  if torch is None:
    return []
  torch.manual_seed(0)
  lstm = torch.nn.LSTM(VOCAB, workload.hidden).eval()
  head = torch.nn.Linear(workload.hidden, VOCAB).eval()
  inputs = torch.nn.functional.one_hot(torch.as_tensor(_tokens(workload)[0].T.copy()).long(), VOCAB).float()

  def one_call():  # teacher-forced: all 1000 inputs known in advance (a lower bound for decoding)
    with torch.no_grad():
      return head(lstm(inputs)[0])

  def per_token():  # the book's predict loop: one call per token, the argmax fed back
    token, state = 0, None
    with torch.no_grad():
      for _ in range(workload.steps):
        x = torch.nn.functional.one_hot(torch.tensor([[token]]), VOCAB).float()
        output, state = lstm(x, state)
        token = int(head(output).argmax())

  return [Runner("pytorch nn.LSTM, one teacher-forced call", one_call, workload.steps, is_reference=True),
          Runner("pytorch nn.LSTM, per-token Python loop (book)", per_token, workload.steps)]


# ---------------------------------------------------------------------------------------------------- measuring


def matmul_peak_flops(size: int = 2048, repeats: int = 5) -> float:
  """The best fp32 FLOP/s of an XLA ``[size, size] x [size, size]`` matmul on this machine."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, a).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2.0 * size ** 3 / min(times)


def build_runners(workload: Workload) -> list[Runner]:
  if workload.name == "W3":
    runners = [scratch_generate_runner(workload, "fused_vjp"), scratch_generate_runner(workload, "scan")]
    return runners + torch_generate_runners(workload)
  runners = [scratch_train_runner(workload, "fused_vjp"), scratch_train_runner(workload, "scan"),
             linen_train_runner(workload), flax_cell_train_runner(workload, "OptimizedLSTMCell"),
             flax_cell_train_runner(workload, "LSTMCell"), torch_train_runner(workload)]
  return [r for r in runners if r is not None]


def measure(runners: list[Runner], rounds: int, seconds_per_call_batch: float) -> None:
  """Compiles and warms up every runner, then times them in interleaved rounds (rotating the order)."""
  for runner in runners:
    runner.compile_s = _timed_call(runner)      # first call: tracing + compilation (+ one step)
    one = min(_timed_call(runner) for _ in range(2))
    runner.iterations = max(1, round(seconds_per_call_batch / max(one, 1e-6)))
  for r in range(rounds):
    for runner in runners[r % len(runners):] + runners[:r % len(runners)]:
      start = time.perf_counter()
      result = None
      for _ in range(runner.iterations):
        result = runner.call()
      _block(result)
      runner.rates.append(runner.units_per_call * runner.iterations / (time.perf_counter() - start))


@dataclasses.dataclass
class Row:
  workload: str
  implementation: str
  median: float        # tokens/s (W3: microseconds per token)
  low: float
  high: float
  ratio: float         # speed relative to the reference row (> 1: faster)
  peak_fraction: float
  compile_s: float


def summarise(workload: Workload, runners: list[Runner], peak: float) -> list[Row]:
  reference = next((r for r in runners if r.is_reference), None)
  rows = []
  for runner in runners:
    ratios = [a / b for a, b in zip(runner.rates, reference.rates)] if reference else []
    median = statistics.median(runner.rates)
    if workload.name == "W3":
      values = [1e6 / rate for rate in runner.rates]
      rows.append(Row(workload.name, runner.name, statistics.median(values), min(values), max(values),
                      statistics.median(ratios) if ratios else float("nan"), float("nan"), runner.compile_s))
    else:
      rows.append(Row(workload.name, runner.name, median, min(runner.rates), max(runner.rates),
                      statistics.median(ratios) if ratios else float("nan"),
                      median * workload.train_flops_per_token() / peak, runner.compile_s))
  return rows


def markdown_table(rows: list[Row], peak: float) -> str:
  lines = [f"fp32 matmul rate measured here: {peak / 1e9:.0f} GFLOP/s; JAX {jax.__version__}, "
           f"{os.cpu_count()} cores visible.", "",
           "| workload | implementation | tokens/s (W3: us/token) median | min-max | x PyTorch | % peak | compile s |",
           "|---|---|---:|---:|---:|---:|---:|"]
  for row in rows:
    unit = "{:.1f}" if row.workload == "W3" else "{:,.0f}"
    peak_text = "" if np.isnan(row.peak_fraction) else f"{100 * row.peak_fraction:.0f}%"
    ratio_text = "" if np.isnan(row.ratio) else f"{row.ratio:.2f}" + (" (noisy)" if is_noisy(row) else "")
    lines.append(f"| {row.workload} | {row.implementation} | {unit.format(row.median)} | "
                 f"{unit.format(row.low)}-{unit.format(row.high)} | {ratio_text} | {peak_text} | "
                 f"{row.compile_s:.1f} |")
  return "\n".join(lines)


NOISY_SPREAD = 0.25  # (max - min) / median over rounds above which a row is flagged


def is_noisy(row: Row) -> bool:
  return (row.high - row.low) / row.median > NOISY_SPREAD


def target_lines(rows: list[Row]) -> list[str]:
  """The issue's targets, checked against this run's ratios (with a warning when the run was noisy)."""
  def find(workload, prefix):
    return next((r for r in rows if r.workload == workload and r.implementation.startswith(prefix)), None)

  checks = []
  for workload in ("W1", "W2"):
    ours = find(workload, "scratch, recurrence=fused_vjp")
    if ours and not np.isnan(ours.ratio):
      checks.append((f"{workload}: scratch fused_vjp >= 1.1x PyTorch", ours.ratio, 1.1))
  ours, flax_fast = find("W1", "scratch, recurrence=fused_vjp"), find("W1", "flax OptimizedLSTMCell")
  if ours and flax_fast:
    checks.append(("W1: scratch fused_vjp >= 1.5x Flax OptimizedLSTMCell", ours.median / flax_fast.median, 1.5))
  ours = find("W3", "scratch greedy, one compiled loop (fused_vjp)")
  if ours and not np.isnan(ours.ratio):
    checks.append(("W3: our per-token latency <= PyTorch one-call forward", ours.ratio, 1.0))
  lines = [f"- {text}: {value:.2f} ({'met' if value >= bar else 'NOT met'})" for text, value, bar in checks]
  noisy = sorted({f"{r.workload} {r.implementation}" for r in rows if is_noisy(r)})
  if noisy:
    lines.append(f"- WARNING: spread over rounds above {NOISY_SPREAD:.0%} (machine busy?) for: {'; '.join(noisy)}. "
                 f"Ratios involving these rows are unreliable; rerun when the machine is quiet.")
  return lines


def forward_seconds(workload: Workload, rounds: int = 7, calls: int = 20) -> dict[str, float]:
  """Seconds per forward pass (LSTM + head + loss, no gradient) of our scratch model, Flax's ``LSTMCell`` under
  ``nn.RNN`` and PyTorch's, so that each train step's time splits into forward and backward."""
  model = model_lib.LanguageModel(vocab_size=VOCAB, hidden_size=workload.hidden, num_layers=workload.num_layers,
                                  init_scheme="pytorch")
  params = model.init(jax.random.key(0))
  inputs, targets = (jnp.asarray(a) for a in _tokens(workload))
  loss = jax.jit(lambda p, x, y: jnp.mean(loss_lib.token_nll(model.apply(p, x)[0], y)))
  flax_lm = flax_cell_module(workload, "LSTMCell")
  flax_params = flax_lm.init(jax.random.key(0), inputs)
  flax_loss = jax.jit(lambda p, x, y: jnp.mean(loss_lib.token_nll(flax_lm.apply(p, x), y)))
  functions = {"scratch": lambda: loss(params, inputs, targets),
               "flax LSTMCell (nn.RNN)": lambda: flax_loss(flax_params, inputs, targets)}
  torch = _torch()
  if torch is not None:
    lstm = torch.nn.LSTM(VOCAB, workload.hidden, workload.num_layers)
    head = torch.nn.Linear(workload.hidden, VOCAB)
    x_t, y_t = (torch.as_tensor(a.T.copy()).long() for a in _tokens(workload))

    def torch_forward():
      with torch.no_grad():
        outputs, _ = lstm(torch.nn.functional.one_hot(x_t, VOCAB).float())
        return torch.nn.functional.cross_entropy(head(outputs).reshape(-1, VOCAB), y_t.reshape(-1))

    functions["pytorch"] = torch_forward
  times: dict[str, list[float]] = {name: [] for name in functions}
  for function in functions.values():
    _block(function())
  for _ in range(rounds):
    for name, function in functions.items():
      start = time.perf_counter()
      for _ in range(calls):
        result = function()
      _block(result)
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
    optimizer = _optimizer()
    state = train_lib.create_train_state(model, optimizer, 0, workload.batch)
    inputs, targets = (jnp.asarray(a) for a in _tokens(workload))
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


def main(argv):
  del argv
  unknown = sorted(set(_WORKLOADS.value) - set(WORKLOADS))
  if unknown:
    raise app.UsageError(f"Unknown workloads {unknown}; choose from {sorted(WORKLOADS)} (--workloads=W1,W3).")
  threads = _THREADS.value or len(os.sched_getaffinity(0))
  torch = _torch()
  if torch is not None:
    torch.set_num_threads(threads)
  else:
    print("torch is not installed: PyTorch rows skipped (pip install lstm_jax[torch]).")
  rounds = _ROUNDS.value or (3 if _QUICK.value else 7)
  seconds = 0.2 if _QUICK.value else 0.5
  peak = matmul_peak_flops()
  rows = []
  for name in _WORKLOADS.value:
    workload = WORKLOADS[name]
    print(f"{name} ({workload.description}): compiling and timing {rounds} rounds ...", flush=True)
    runners = build_runners(workload)
    measure(runners, rounds, seconds)
    rows += summarise(workload, runners, peak)
  table = markdown_table(rows, peak)
  targets = target_lines(rows)
  report = table + ("\n\nTargets (ratios from this run):\n" + "\n".join(targets) if targets else "")
  if _PROFILE.value:
    report += "\n\n" + profile_w1(rows, peak)
  print(report)
  if _MARKDOWN.value:
    with open(_MARKDOWN.value, "w") as f:
      f.write(report + "\n")


if __name__ == "__main__":
  app.run(main)
