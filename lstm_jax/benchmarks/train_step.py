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
  (``lstm_jax.train.generate.generate_ids``); PyTorch runs the 1000 steps as one teacher-forced forward call, and as
  the book's per-token Python loop.

Implementations (``IMPLEMENTATIONS``; ``DEFAULT_IMPLEMENTATIONS`` per backend, ``--implementations`` to choose): the
scratch model (``lstm_jax.models.scratch``) with ``recurrence`` "scan" (autodiff through ``lax.scan``), "fused_vjp"
(hand-written backward, ``lstm_jax.cells.lstm_fused_vjp``) and "pallas" (``lstm_jax.kernels``; interpret mode on a
CPU), each also with ``matmul_dtype=bfloat16`` (``*_bf16``), with weight drop and locked dropout
(``*_regularized``) and, scan and fused_vjp, with recurrent dropout (``*_recurrent_dropout``): the masks' cost beside
the same recurrence; cuDNN through ``jax.experimental.rnn`` (``implementation=cudnn``, CUDA only); our linen module (``lstm_jax.models.linen_layers.RecurrentLayer``) and NNX
model; Flax ``LSTMCell`` and ``OptimizedLSTMCell`` under ``nn.RNN``; PyTorch ``nn.LSTM`` + ``nn.Linear`` +
``clip_grad_norm_`` + SGD when torch is installed, on CUDA (cuDNN) when torch sees a GPU, else on the CPU
(``torch.set_num_threads`` = cores).

Method (compiling, interleaved timing rounds, medians, ratios, "% peak", noisy rows): ``lstm_jax.benchmarks.timing``;
workloads and the runner type: ``lstm_jax.benchmarks.workloads``.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from lstm_jax.models import scratch as model_lib
from lstm_jax.train import generate as generate_lib
from lstm_jax.train import loop as train_lib
from lstm_jax.train import loss as loss_lib
from lstm_jax.train import optimizer as optimizer_lib
from lstm_jax.train import state as train_state_lib
# The timing and workload names stay importable from here (the benchmark command, profile.py and tests use them).
from lstm_jax.benchmarks.timing import (NOISY_SPREAD, Row, is_noisy, markdown_table,  # noqa: F401
                                        matmul_peak_flops, measure, noisy_lines, summarise)
from lstm_jax.benchmarks.workloads import (GENERATE_TOKENS, VOCAB, WORKLOADS, Runner, Workload,  # noqa: F401
                                           block, random_tokens)

LEARNING_RATE = 1.0
CLIP_NORM = 1.0


def sgd_optimizer() -> optax.GradientTransformation:
  return optimizer_lib.make_optimizer(ml_collections.ConfigDict(
      {"name": "sgd", "learning_rate": LEARNING_RATE, "clip_norm": CLIP_NORM}))


# ---------------------------------------------------------------------------------------------------- train steps


def _model_train_runner(name: str, model, workload: Workload) -> Runner:
  """A model with the functional interface (``init``, ``apply``, ``zero_carry``) under our own jitted
  ``lstm_jax.train.loop.train_step`` (state donated, zero initial carry)."""
  optimizer = sgd_optimizer()
  state = [train_state_lib.create_train_state(model, optimizer, seed=0, batch_size=workload.batch)]
  step = train_lib.compile_train_step(model, optimizer, carry_state=False)
  inputs, targets = (jnp.asarray(a) for a in random_tokens(workload))

  def call():
    state[0], metrics = step(state[0], inputs, targets)
    return metrics["nll_sum"]

  return Runner(name, call, workload.batch * workload.steps)


# The regularized rows' options (``*_regularized``): AWD-LSTM's weight drop and locked dropout (the workloads'
# inputs are one-hot, so no embedding dropout), masks drawn every step.
REGULARIZED = {"weight_drop": 0.25, "locked_dropout": 0.1}
# The ``*_recurrent_dropout`` rows' option: Gal's mask on h inside the step (scan and fused_vjp have it).
RECURRENT_DROPOUT = {"recurrent_dropout": 0.25}


def scratch_train_runner(workload: Workload, recurrence: str, matmul_dtype: str = "float32",
                         options: dict | None = None) -> Runner:
  """Our scratch model with the given recurrence, matmul operand dtype and regularizer ``options``."""
  options = options or {}
  model = model_lib.LanguageModel(vocab_size=VOCAB, hidden_size=workload.hidden, num_layers=workload.num_layers,
                                  init_scheme="pytorch", recurrence=recurrence, matmul_dtype=matmul_dtype,
                                  **options)
  suffix = "" if matmul_dtype == "float32" else f" ({matmul_dtype})"
  suffix += "".join(f", {name} {value}" for name, value in options.items())
  runner = _model_train_runner(f"scratch, recurrence={recurrence}{suffix}", model, workload)
  found = model.estimates(workload.batch, workload.steps)  # on a GPU/TPU: the model's estimate beside the measured
  chosen = model.recurrence_for(workload.batch, workload.steps)
  if chosen in found:
    runner.estimate = f"{found[chosen].tokens_per_second:,.0f} ({found[chosen].bound})"
  return runner


def cudnn_train_runner(workload: Workload) -> Runner | None:
  """The language model with cuDNN's LSTM (``implementation=cudnn``); None without a CUDA GPU."""
  from lstm_jax.models import cudnn as cudnn_model  # noqa: PLC0415
  try:
    model = cudnn_model.from_settings(VOCAB, dict(hidden_size=workload.hidden, num_layers=workload.num_layers,
                                                  init_scheme="pytorch"))
  except ValueError:  # no CUDA GPU here
    return None
  runner = _model_train_runner("cuDNN LSTM (jax.experimental.rnn)", model, workload)
  runner.reference = "cudnn"
  return runner


def nnx_train_runner(workload: Workload) -> Runner:
  """The language model in NNX form (``lstm_jax.models.nnx_model``)."""
  from lstm_jax.models import nnx_model  # noqa: PLC0415
  model = nnx_model.NnxLanguageModel(vocab_size=VOCAB, hidden_size=workload.hidden, num_layers=workload.num_layers,
                                     init_scheme="pytorch")
  return _model_train_runner("lstm_jax.models.nnx_model (NNX)", model, workload)


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
    from lstm_jax.models import linen_layers as our_linen
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

  return _flax_train_runner("lstm_jax.models.linen_layers RecurrentLayer", OurLinenLM(), workload)


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


# -------------------------------------------------------------------------------------------------- by name


# Train-step implementations by name; a factory returns None where that implementation cannot run here.
IMPLEMENTATIONS: dict[str, Callable[[Workload], Runner | None]] = {
    "scan": lambda w: scratch_train_runner(w, "scan"),
    "fused_vjp": lambda w: scratch_train_runner(w, "fused_vjp"),
    "fused_vjp_bf16": lambda w: scratch_train_runner(w, "fused_vjp", "bfloat16"),
    "pallas": lambda w: scratch_train_runner(w, "pallas"),
    "pallas_bf16": lambda w: scratch_train_runner(w, "pallas", "bfloat16"),
    "fused_vjp_regularized": lambda w: scratch_train_runner(w, "fused_vjp", options=REGULARIZED),
    "pallas_regularized": lambda w: scratch_train_runner(w, "pallas", options=REGULARIZED),
    "fused_vjp_recurrent_dropout": lambda w: scratch_train_runner(w, "fused_vjp", options=RECURRENT_DROPOUT),
    "scan_recurrent_dropout": lambda w: scratch_train_runner(w, "scan", options=RECURRENT_DROPOUT),
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
    "gpu": ("pallas", "pallas_bf16", "pallas_regularized", "fused_vjp", "fused_vjp_bf16", "scan", "cudnn",
            "flax_optimized", "torch"),
    "tpu": ("pallas", "pallas_bf16", "pallas_regularized", "fused_vjp", "fused_vjp_bf16", "scan", "flax_optimized"),
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

