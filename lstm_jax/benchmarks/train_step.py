"""Train-step and generation speed: our LSTM against Flax's cells and PyTorch's ``nn.LSTM``, on this machine.

    python -m lstm_jax.commands.benchmark            # all workloads, 7 rounds (a few minutes on 2 cores)
    python -m lstm_jax.commands.benchmark --quick    # 3 shorter rounds
    python -m lstm_jax.commands.benchmark --workloads=W1 --markdown=/tmp/bench.md --profile
    python -m lstm_jax.commands.benchmark --workloads=W1,W2,W4   # on a GPU: adds pallas, bf16, cuDNN, torch CUDA

Workloads (vocabulary 28):

- W1, the book's: 1 layer x 256, batch 32, 35 steps; W2, char-RNN size: 2 layers x 512, batch 64, 100 steps;
  W4, accelerator size: 2 layers x 1024, batch 128, 100 steps; "tiny" (1 x 16, batch 4, 5 steps) checks the
  command itself. One full train step each: one-hot inputs, LSTM, dense output layer, token-mean cross-entropy,
  backward, global-norm clipping and an SGD update, from a zero state.
- W3, generation: hidden 256, batch 1, 1000 tokens. Ours decodes greedily inside one compiled loop
  (``lstm_jax.generate.generate_ids``); PyTorch runs the 1000 steps as one teacher-forced forward call, and as
  the book's per-token Python loop.

Implementations (``IMPLEMENTATIONS``; ``DEFAULT_IMPLEMENTATIONS`` per backend, ``--implementations`` to choose):
the scratch model (``lstm_jax.model``) with ``recurrence`` "scan" (autodiff through ``lax.scan``), "fused_vjp"
(hand-written backward, ``lstm_jax.cells.lstm_fused_vjp``) and "pallas" (``lstm_jax.kernels``; interpret mode on
a CPU), each also with ``matmul_dtype=bfloat16`` (``*_bf16``); cuDNN through ``jax.experimental.rnn``
(``implementation=cudnn``, CUDA only); our linen module (``lstm_jax.linen.RecurrentLayer``) and NNX model; Flax
``LSTMCell`` and ``OptimizedLSTMCell`` under ``nn.RNN``; PyTorch ``nn.LSTM`` + ``nn.Linear`` +
``clip_grad_norm_`` + SGD when torch is installed, on CUDA (cuDNN) when torch sees a GPU, else on the CPU
(``torch.set_num_threads`` = cores).

Method: every implementation is compiled and warmed up first (compile time reported on its own), then all of
them run in interleaved rounds, each timing enough calls for ~0.5 s (0.2 s with ``--quick``). The table gives the
median and min-max over rounds; "x PyTorch" is the median over rounds of the per-round speed ratio (> 1: faster
than PyTorch; for W3 the latency ratio PyTorch one-call / ours); "x cuDNN" the same against the cuDNN row. "% peak" is model FLOP/s (3x the forward's
matmul FLOPs; the one-hot input projection is a gather and counts 0) over the fp32 matmul rate this command
measures (best of several 2048^3 XLA matmuls). The machine may be shared: read ratios, not absolute numbers;
rows whose rounds spread by more than 25% are marked "(noisy)" and listed in a warning. PyTorch's
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
import ml_collections
import optax

from lstm_jax import generate as generate_lib
from lstm_jax import loss as loss_lib
from lstm_jax import model as model_lib
from lstm_jax import optimizer as optimizer_lib
from lstm_jax import train as train_lib
from lstm_jax import train_state as train_state_lib

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
    "W4": Workload("W4", "accelerator: 2x1024, batch 128, 100 steps", 2, 1024, 128, 100),
    "tiny": Workload("tiny", "command check: 1x16, batch 4, 5 steps", 1, 16, 4, 5),
}


@dataclasses.dataclass
class Runner:
  """One implementation of one workload: ``call()`` does one unit of work and returns something to wait on."""
  name: str
  call: Callable[[], Any]
  units_per_call: int           # tokens per call
  reference: str = ""           # "torch" / "cudnn": the row the "x PyTorch" / "x cuDNN" ratios divide by
  compile_s: float = float("nan")
  iterations: int = 1
  rates: list[float] = dataclasses.field(default_factory=list)  # tokens/s per round


def block(result) -> None:
  """Waits for JAX's asynchronous dispatch; PyTorch on CPU has already finished."""
  if isinstance(result, (jax.Array, tuple, list, dict)):
    jax.block_until_ready(result)


def _timed_call(runner: Runner) -> float:
  start = time.perf_counter()
  block(runner.call())
  return time.perf_counter() - start


def random_tokens(workload: Workload, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  return (rng.integers(0, VOCAB, (workload.batch, workload.steps)).astype(np.int32),
          rng.integers(0, VOCAB, (workload.batch, workload.steps)).astype(np.int32))


def sgd_optimizer() -> optax.GradientTransformation:
  return optimizer_lib.make_optimizer(ml_collections.ConfigDict(
      {"name": "sgd", "learning_rate": LEARNING_RATE, "clip_norm": CLIP_NORM}))


# ---------------------------------------------------------------------------------------------------- train steps


def _model_train_runner(name: str, model, workload: Workload) -> Runner:
  """A model with the functional interface (``init``, ``apply``, ``zero_carry``) under our own jitted
  ``lstm_jax.train.train_step`` (state donated, zero initial carry)."""
  optimizer = sgd_optimizer()
  state = [train_state_lib.create_train_state(model, optimizer, seed=0, batch_size=workload.batch)]
  step = train_lib.compile_train_step(model, optimizer, carry_state=False)
  inputs, targets = (jnp.asarray(a) for a in random_tokens(workload))

  def call():
    state[0], metrics = step(state[0], inputs, targets)
    return metrics["nll_sum"]

  return Runner(name, call, workload.batch * workload.steps)


def scratch_train_runner(workload: Workload, recurrence: str, matmul_dtype: str = "float32") -> Runner:
  """Our scratch model with the given recurrence and matmul operand dtype."""
  model = model_lib.LanguageModel(vocab_size=VOCAB, hidden_size=workload.hidden, num_layers=workload.num_layers,
                                  init_scheme="pytorch", recurrence=recurrence, matmul_dtype=matmul_dtype)
  suffix = "" if matmul_dtype == "float32" else f" ({matmul_dtype})"
  return _model_train_runner(f"scratch, recurrence={recurrence}{suffix}", model, workload)


def cudnn_train_runner(workload: Workload) -> Runner | None:
  """The language model with cuDNN's LSTM (``implementation=cudnn``); None without a CUDA GPU."""
  from lstm_jax import cudnn_model  # noqa: PLC0415
  try:
    model = cudnn_model.from_settings(VOCAB, dict(hidden_size=workload.hidden, num_layers=workload.num_layers,
                                                  init_scheme="pytorch"))
  except ValueError:  # no CUDA GPU here
    return None
  runner = _model_train_runner("cuDNN LSTM (jax.experimental.rnn)", model, workload)
  runner.reference = "cudnn"
  return runner


def nnx_train_runner(workload: Workload) -> Runner:
  """The language model in NNX form (``lstm_jax.nnx_model``)."""
  from lstm_jax import nnx_model  # noqa: PLC0415
  model = nnx_model.NnxLanguageModel(vocab_size=VOCAB, hidden_size=workload.hidden, num_layers=workload.num_layers,
                                     init_scheme="pytorch")
  return _model_train_runner("lstm_jax.nnx_model (NNX)", model, workload)


def _flax_train_runner(name: str, module, workload: Workload) -> Runner:
  """A Flax module ``tokens [B, T] -> logits [B, T, V]`` under the same jitted step as ours."""
  inputs, targets = (jnp.asarray(a) for a in random_tokens(workload))
  params = module.init(jax.random.key(0), inputs)["params"]
  optimizer = sgd_optimizer()

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


def torch_module():
  try:
    import torch
  except ImportError:
    return None
  return torch


def torch_train_runner(workload: Workload) -> Runner | None:
  torch = torch_module()
  if torch is None:
    return None
  torch.manual_seed(0)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  lstm = torch.nn.LSTM(VOCAB, workload.hidden, workload.num_layers).to(device)
  head = torch.nn.Linear(workload.hidden, VOCAB).to(device)
  parameters = list(lstm.parameters()) + list(head.parameters())
  optimizer = torch.optim.SGD(parameters, lr=LEARNING_RATE)
  inputs, targets = (torch.as_tensor(a.T.copy()).long().to(device)  # time-major, as nn.LSTM
                     for a in random_tokens(workload))

  def call():
    outputs_TBH, _ = lstm(torch.nn.functional.one_hot(inputs, VOCAB).float())
    loss = torch.nn.functional.cross_entropy(head(outputs_TBH).reshape(-1, VOCAB), targets.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, CLIP_NORM)
    optimizer.step()
    if device == "cuda":
      torch.cuda.synchronize()

  name = "pytorch nn.LSTM" + (" (CUDA, cuDNN)" if device == "cuda" else "")
  return Runner(name, call, workload.batch * workload.steps, reference="torch")


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
  torch = torch_module()
  if torch is None:
    return []
  torch.manual_seed(0)
  lstm = torch.nn.LSTM(VOCAB, workload.hidden).eval()
  head = torch.nn.Linear(workload.hidden, VOCAB).eval()
  inputs = torch.nn.functional.one_hot(torch.as_tensor(random_tokens(workload)[0].T.copy()).long(), VOCAB).float()

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

  return [Runner("pytorch nn.LSTM, one teacher-forced call", one_call, workload.steps, reference="torch"),
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


# Train-step implementations by name; a factory returns None where that implementation cannot run here.
IMPLEMENTATIONS: dict[str, Callable[[Workload], Runner | None]] = {
    "scan": lambda w: scratch_train_runner(w, "scan"),
    "fused_vjp": lambda w: scratch_train_runner(w, "fused_vjp"),
    "fused_vjp_bf16": lambda w: scratch_train_runner(w, "fused_vjp", "bfloat16"),
    "pallas": lambda w: scratch_train_runner(w, "pallas"),
    "pallas_bf16": lambda w: scratch_train_runner(w, "pallas", "bfloat16"),
    "cudnn": cudnn_train_runner,
    "linen": lambda w: linen_train_runner(w),
    "nnx": lambda w: nnx_train_runner(w),
    "flax_optimized": lambda w: flax_cell_train_runner(w, "OptimizedLSTMCell"),
    "flax_lstm": lambda w: flax_cell_train_runner(w, "LSTMCell"),
    "torch": lambda w: torch_train_runner(w),
}
# What runs by default on each backend (pallas runs in interpret mode on a CPU: tests only, not timed here).
DEFAULT_IMPLEMENTATIONS = {
    "cpu": ("fused_vjp", "scan", "linen", "nnx", "flax_optimized", "flax_lstm", "torch"),
    "gpu": ("pallas", "pallas_bf16", "fused_vjp", "fused_vjp_bf16", "scan", "cudnn", "flax_optimized", "torch"),
    "tpu": ("pallas", "pallas_bf16", "fused_vjp", "fused_vjp_bf16", "scan", "flax_optimized"),
}


def build_runners(workload: Workload, implementations: tuple[str, ...] | None = None) -> list[Runner]:
  """The runners of ``workload``: the given train-step ``implementations`` (default: this backend's), or for W3
  the generation runners."""
  if workload.name == "W3":
    runners = [scratch_generate_runner(workload, "fused_vjp"), scratch_generate_runner(workload, "scan")]
    return runners + torch_generate_runners(workload)
  names = implementations or DEFAULT_IMPLEMENTATIONS.get(jax.default_backend(), DEFAULT_IMPLEMENTATIONS["cpu"])
  unknown = sorted(set(names) - set(IMPLEMENTATIONS))
  if unknown:
    raise ValueError(f"Unknown implementations {unknown}; choose from {sorted(IMPLEMENTATIONS)}.")
  runners = [IMPLEMENTATIONS[name](workload) for name in names]
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
      block(result)
      runner.rates.append(runner.units_per_call * runner.iterations / (time.perf_counter() - start))


@dataclasses.dataclass
class Row:
  workload: str
  implementation: str
  median: float        # tokens/s (W3: microseconds per token)
  low: float
  high: float
  ratio: float         # speed relative to the PyTorch row (> 1: faster)
  peak_fraction: float
  compile_s: float
  ratio_cudnn: float = float("nan")  # speed relative to the cuDNN (jax.experimental.rnn) row


def _median_ratio(runner: Runner, reference: Runner | None) -> float:
  """The median over rounds of ``runner``'s rate over ``reference``'s in the same round (nan: no reference)."""
  if reference is None:
    return float("nan")
  return statistics.median(a / b for a, b in zip(runner.rates, reference.rates))


def summarise(workload: Workload, runners: list[Runner], peak: float) -> list[Row]:
  torch_row = next((r for r in runners if r.reference == "torch"), None)
  cudnn_row = next((r for r in runners if r.reference == "cudnn"), None)
  rows = []
  for runner in runners:
    median = statistics.median(runner.rates)
    ratio, ratio_cudnn = _median_ratio(runner, torch_row), _median_ratio(runner, cudnn_row)
    if workload.name == "W3":
      values = [1e6 / rate for rate in runner.rates]
      rows.append(Row(workload.name, runner.name, statistics.median(values), min(values), max(values),
                      ratio, float("nan"), runner.compile_s, ratio_cudnn))
    else:
      rows.append(Row(workload.name, runner.name, median, min(runner.rates), max(runner.rates), ratio,
                      median * workload.train_flops_per_token() / peak, runner.compile_s, ratio_cudnn))
  return rows


def markdown_table(rows: list[Row], peak: float) -> str:
  device = jax.devices()[0]
  lines = [f"fp32 matmul rate measured here: {peak / 1e9:.0f} GFLOP/s; JAX {jax.__version__}, {device.platform} "
           f"{device.device_kind}, {os.cpu_count()} cores visible.", "",
           "| workload | implementation | tokens/s (W3: us/token) median | min-max | x PyTorch | x cuDNN (jax) "
           "| % peak | compile s |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
  for row in rows:
    unit = "{:.1f}" if row.workload == "W3" else "{:,.0f}"
    peak_text = "" if np.isnan(row.peak_fraction) else f"{100 * row.peak_fraction:.0f}%"
    noisy = " (noisy)" if is_noisy(row) else ""
    ratio_text, cudnn_text = ("" if np.isnan(r) else f"{r:.2f}{noisy}" for r in (row.ratio, row.ratio_cudnn))
    lines.append(f"| {row.workload} | {row.implementation} | {unit.format(row.median)} | "
                 f"{unit.format(row.low)}-{unit.format(row.high)} | {ratio_text} | {cudnn_text} | {peak_text} | "
                 f"{row.compile_s:.1f} |")
  return "\n".join(lines)


NOISY_SPREAD = 0.25  # (max - min) / median over rounds above which a row is flagged


def is_noisy(row: Row) -> bool:
  return (row.high - row.low) / row.median > NOISY_SPREAD


def noisy_lines(rows: list[Row]) -> list[str]:
  """A warning naming the rows whose rounds spread too much for their ratios to be trusted (none: empty)."""
  noisy = sorted({f"{r.workload} {r.implementation}" for r in rows if is_noisy(r)})
  if not noisy:
    return []
  return [f"- WARNING: spread over rounds above {NOISY_SPREAD:.0%} (machine busy?) for: {'; '.join(noisy)}. "
          f"Ratios involving these rows are unreliable; rerun when the machine is quiet."]
