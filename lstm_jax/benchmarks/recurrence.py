"""Forward+backward time of one LSTM layer under each implementation, side by side (a library: no flags).

Every implementation computes the same thing: one layer with ``input_size = hidden``, a batch-major
``[B, T, H]`` (cuDNN, Flax, PyTorch) or time-major ``[T, B, H]`` (ours) input, zero initial state, the loss
``sum(hs)`` and its gradient w.r.t. all weights (and the inputs), jitted; the input projection is included
everywhere since cuDNN fuses it. Timing: warm-up calls (compile) excluded, then ``rounds`` interleaved rounds
(each implementation once per round, ``inner`` calls each, ``block_until_ready``), reporting median, min, max.

Names: "scan" (``lstm.recurrence``), "fused_vjp" (the hand-written backward), "pallas" (the Pallas kernels;
compiled, or interpret mode on CPU only when ``pallas_interpret=True``), "cudnn" (``jax.experimental.rnn.lstm``;
CUDA only), "flax_optimized" (``flax.linen.OptimizedLSTMCell`` under ``nn.RNN``) and "torch_cudnn"
(``torch.nn.LSTM`` on CUDA). An implementation that cannot run here gives a row with ``status`` "skipped: ..."
and one that fails gives "error: ...", so one broken path never hides the others.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax.cells import lstm

from lstm_jax.cells import lstm_fused_vjp as _fused_vjp

_now = time.perf_counter  # (time_recurrences has a parameter named time)
NAMES = ("scan", "fused_vjp", "pallas", "cudnn", "flax_optimized", "torch_cudnn")


def _problem(batch, time_steps, hidden, seed=0):
  rng = np.random.default_rng(seed)
  scale = 1.0 / np.sqrt(hidden)
  params = {"W_x": scale * rng.standard_normal((hidden, 4 * hidden)),
            "W_h": scale * rng.standard_normal((hidden, 4 * hidden)), "b": np.zeros(4 * hidden)}
  params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
  xs_BTH = jnp.asarray(rng.standard_normal((batch, time_steps, hidden)), jnp.float32)
  return params, xs_BTH


def _ours(recurrence: Callable, params, xs_BTH) -> Callable[[], object]:
  xs_TBH = jnp.swapaxes(xs_BTH, 0, 1)
  carry = lstm.zero_carry(xs_TBH.shape[1], params["W_h"].shape[0])

  def loss(p, x):
    return jnp.sum(recurrence(p, lstm.project_inputs(p, x), carry)[1])

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return lambda: grad(params, xs_TBH)


def _cudnn(params, xs_BTH):
  from lstm_jax.interop import cudnn
  if not cudnn.cudnn_available():
    raise _Skip("needs CUDA")
  B, T, H = xs_BTH.shape
  flat = cudnn.to_cudnn((params,))
  zeros = jnp.zeros((1, B, H), jnp.float32)
  loss = lambda w, x: jnp.sum(cudnn.layers(w, x, zeros, zeros, input_size=H, hidden_size=H, num_layers=1)[0])
  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return lambda: grad(flat, xs_BTH)


def _flax_optimized(params, xs_BTH):
  import flax.linen as nn
  H = xs_BTH.shape[-1]
  model = nn.RNN(nn.OptimizedLSTMCell(H))
  variables = model.init(jax.random.key(0), xs_BTH)
  grad = jax.jit(jax.grad(lambda v, x: jnp.sum(model.apply(v, x)), argnums=(0, 1)))
  return lambda: grad(variables, xs_BTH)


def _torch_cudnn(params, xs_BTH):
  try:
    import torch
  except ImportError:
    raise _Skip("torch not installed") from None
  if not torch.cuda.is_available():
    raise _Skip("torch has no CUDA")
  H = xs_BTH.shape[-1]
  module = torch.nn.LSTM(H, H, batch_first=True).cuda()
  x = torch.from_numpy(np.asarray(xs_BTH)).cuda().requires_grad_(True)

  def run():
    module.zero_grad(set_to_none=True)
    x.grad = None
    module(x)[0].sum().backward()
    torch.cuda.synchronize()
  return run


class _Skip(Exception):
  pass


def _builder(name: str, matmul_dtype, pallas_interpret: bool):
  if name == "scan":
    return lambda p, x: _ours(lstm.recurrence, p, x)
  if name == "fused_vjp":
    return lambda p, x: _ours(_fused_vjp.recurrence, p, x)
  if name == "pallas":
    def build(p, x):
      from lstm_jax.kernels import lstm_pallas
      on_cpu = jax.default_backend() == "cpu"
      if on_cpu and not pallas_interpret:
        raise _Skip("no accelerator (pass pallas_interpret=True for interpret mode)")
      fn = lambda params, xproj, carry: lstm_pallas.recurrence(params, xproj, carry, matmul_dtype=matmul_dtype,
                                                                interpret=on_cpu)
      return _ours(fn, p, x)
    return build
  if name == "cudnn":
    return _cudnn
  if name == "flax_optimized":
    return _flax_optimized
  if name == "torch_cudnn":
    return _torch_cudnn
  raise ValueError(f"unknown implementation {name!r}; choose from {NAMES}")


def _block(out):
  if out is not None:
    jax.block_until_ready(out)


def time_recurrences(batch: int, time: int, hidden: int, *, names=NAMES, rounds: int = 5, inner: int = 3,
                     warmup: int = 2, matmul_dtype=jnp.float32, pallas_interpret: bool = False) -> list[dict]:
  """Times forward+backward of one ``[B, T, H]`` LSTM layer per name; returns one dict per name with ``name,
  batch, time, hidden, status`` and (when ok) ``median_ms, min_ms, max_ms, tokens_per_s`` (``B*T`` per second)."""
  params, xs = _problem(batch, time, hidden)
  runs, rows = {}, {}
  for name in names:
    row = dict(name=name, batch=batch, time=time, hidden=hidden, status="ok",
               matmul_dtype=jnp.dtype(matmul_dtype).name if name == "pallas" else "float32")
    rows[name] = row
    try:
      run = _builder(name, matmul_dtype, pallas_interpret)(params, xs)
      for _ in range(warmup):
        _block(run())
      runs[name] = run
    except _Skip as e:
      row["status"] = f"skipped: {e}"
    except Exception as e:  # noqa: BLE001  (reported in the table, the other implementations still run)
      row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
  samples = {name: [] for name in runs}
  for _ in range(rounds):
    for name, run in runs.items():
      start = _now()
      for _ in range(inner):
        out = run()
      _block(out)
      samples[name].append((_now() - start) / inner)
  for name, times in samples.items():
    median = statistics.median(times)
    rows[name].update(median_ms=1e3 * median, min_ms=1e3 * min(times), max_ms=1e3 * max(times),
                      tokens_per_s=batch * time / median)
  return [rows[name] for name in names]



def markdown_table(rows: list[dict]) -> str:
  """One line per row: shape, median (min-max) ms, tokens/s, and time relative to "cudnn" at the same shape."""
  cudnn_ms = {(r["batch"], r["time"], r["hidden"]): r["median_ms"] for r in rows
              if r["name"] == "cudnn" and "median_ms" in r}
  lines = ["| impl | B | T | H | dot dtype | fwd+bwd ms, median (min-max) | tokens/s | time / cuDNN |",
           "|---|---:|---:|---:|---|---:|---:|---:|"]
  for r in rows:
    shape = (r["batch"], r["time"], r["hidden"])
    head = f"| {r['name']} | {r['batch']} | {r['time']} | {r['hidden']} | {r.get('matmul_dtype', '')} |"
    if "median_ms" not in r:
      lines.append(f"{head} {r['status'].replace('|', '/')} | | |")
      continue
    ratio = f"{r['median_ms'] / cudnn_ms[shape]:.2f}x" if shape in cudnn_ms else "n/a"
    lines.append(f"{head} {r['median_ms']:.3f} ({r['min_ms']:.3f}-{r['max_ms']:.3f}) | "
                 f"{r['tokens_per_s']:,.0f} | {ratio} |")
  return "\n".join(lines) + "\n"


def check_pallas(batch: int, time: int, hidden: int, *, matmul_dtype=jnp.float32, interpret=None) -> dict:
  """Max abs differences of the Pallas recurrence from fused_vjp: ``hs``, final ``c`` and the gradients w.r.t.
  ``W_h``, ``xproj`` and the initial ``(h, c)`` of a weighted loss (compiled on an accelerator)."""
  from lstm_jax.kernels import lstm_pallas
  rng = np.random.default_rng(1)
  W_h = jnp.asarray(rng.standard_normal((hidden, 4 * hidden)) / np.sqrt(hidden), jnp.float32)
  xproj = jnp.asarray(rng.standard_normal((time, batch, 4 * hidden)), jnp.float32)
  carry = lstm.LSTMCarry(*(jnp.asarray(rng.standard_normal((batch, hidden)), jnp.float32) for _ in range(2)))
  weights = jnp.asarray(rng.standard_normal((time, batch, hidden)), jnp.float32)
  pallas = lambda p, x, c: lstm_pallas.recurrence(p, x, c, matmul_dtype=matmul_dtype, interpret=interpret)

  def outputs(fn):
    loss = lambda W, x, c: (lambda out: jnp.sum(out[1] * weights) + jnp.sum(out[0].c))(fn({"W_h": W}, x, c))
    final, hs = jax.jit(fn)({"W_h": W_h}, xproj, carry)
    dW, dx, dc = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(W_h, xproj, carry)
    return dict(hs=hs, c_T=final.c, dW_h=dW, dxproj=dx, dh0=dc.h, dc0=dc.c)

  got, want = outputs(pallas), outputs(_fused_vjp.recurrence)
  return {k: float(jnp.abs(got[k] - want[k]).max()) for k in got}
