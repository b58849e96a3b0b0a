"""Lowering of whole accelerator train steps on any machine (``jax.export`` for a platform this host lacks):
one line per (implementation, platform) with the kernels' custom-call targets found in the lowered module; the
Pallas rows: every cell with kernels (``model.PALLAS``) in float32 and bfloat16.

``python -m lstm_jax.commands.benchmark --lower_only --platforms=cuda,tpu``. The Pallas recurrences lower here.
cuDNN's LSTM (``jax.experimental.rnn.lstm``) lowers only through the CUDA jaxlib plugin (it asks cuDNN for its
workspace sizes and packs a descriptor at lowering time); without it, its train step is traced instead, with a
placeholder reserve-space size, down to the ``rnn_fwd`` / ``rnn_bwd`` primitives that lower to cuDNN's custom
calls (``cudnn_rnn_ffi`` / ``cudnn_rnn_bwd_ffi``) on a GPU machine.
"""

from __future__ import annotations

import contextlib
import re

import jax
import jax.numpy as jnp
from jax import export

from lstm_jax.benchmarks.train_step import sgd_optimizer
from lstm_jax.models import scratch as model_lib
from lstm_jax.models.placement import Placement
from lstm_jax.train import loop as train
from lstm_jax.train import state as train_state_lib

TRITON_CALL = "__gpu$xla.gpu.triton"
EXPECTED = {"cuda": TRITON_CALL, "tpu": "tpu_custom_call"}


def _target(platform: str):
  """jax >= 0.11 lowers Triton kernels for a named GPU; without one here, an abstract H200."""
  if platform != "cuda" or not hasattr(jax.sharding, "AbstractDevice"):
    return contextlib.nullcontext()
  device = jax.sharding.AbstractDevice(device_kind="NVIDIA H200", num_cores=132, platform="gpu")
  return jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("x",), abstract_device=device))


def lowered_train_step(platform: str, cell: str = "lstm", hidden: int = 32, batch: int = 4, steps: int = 5,
                       vocab: int = 11, matmul_dtype: str = "float32", members: int = 0) -> str:
  """The MLIR module of one SGD train step of the scratch model with ``recurrence=pallas``, lowered for
  ``platform`` (raises if lowering fails); ``members > 0``: the step ``jax.vmap``-ed over that many members, as
  population training runs it."""
  model = model_lib.LanguageModel(vocab_size=vocab, hidden_size=hidden, cell=cell, recurrence="pallas",
                                  matmul_dtype=matmul_dtype, placement=Placement(platform))
  optimizer = sgd_optimizer()
  state = train_state_lib.create_train_state(model, optimizer, seed=0, batch_size=batch)
  tokens = jnp.zeros((batch, steps), jnp.int32)
  step = lambda s, x, y: train.train_step(s, x, y, model=model, optimizer=optimizer, carry_state=True)
  if members:
    step = jax.vmap(step)
    state, tokens = jax.tree.map(lambda x: jnp.stack([x] * members), (state, tokens))
  with _target(platform):
    exported = export.export(jax.jit(step), platforms=[platform],
                             disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON_CALL)])(state, tokens,
                                                                                                    tokens)
  return exported.mlir_module()


def lower_train_step(platform: str, **settings) -> list[str]:
  """The custom-call targets of ``lowered_train_step(platform, **settings)``."""
  return sorted(set(re.findall(r"custom_call @([\w$.]+)", lowered_train_step(platform, **settings))))


def _pallas_line(platform: str, cell: str, dtype: str) -> tuple[str, bool]:
  """The report line of one Pallas train step, and whether it lowered with its expected custom call."""
  name = f"pallas {cell} ({dtype})"
  try:
    calls = lower_train_step(platform, cell=cell, matmul_dtype=dtype)
  except Exception as e:  # noqa: BLE001 (a report line per failure, then a non-zero exit)
    return f"{name:34s} {platform:5s} FAILED: {type(e).__name__}: {str(e)[:200]}", False
  found = EXPECTED.get(platform) in calls
  return f"{name:34s} {platform:5s} {'ok' if found else 'MISSING'}: {', '.join(calls) or 'no custom call'}", found


CUDNN_PRIMITIVES = ("rnn_fwd", "rnn_bwd")
CUDNN_CALLS = ("cudnn_rnn_ffi", "cudnn_rnn_bwd_ffi")


@contextlib.contextmanager
def _placeholder_cudnn_sizes():
  """Where cuDNN cannot be asked (no CUDA plugin, or the plugin without a GPU and its cuDNN), its workspace /
  reserve-space sizes (asked at abstract evaluation) are a placeholder, enough to trace; nothing traced under it
  can run or lower."""
  from jax._src.lib import gpu_rnn  # noqa: PLC0415
  name = "compute_rnn_workspace_reserve_space_sizes"
  if gpu_rnn is None:
    yield
    return
  original = getattr(gpu_rnn, name, None)
  setattr(gpu_rnn, name, lambda *args: (1, 1))
  try:
    yield
  finally:
    if original is None:
      delattr(gpu_rnn, name)
    else:
      setattr(gpu_rnn, name, original)


def _cudnn_step(hidden: int = 32, batch: int = 4, steps: int = 5, vocab: int = 11):
  from lstm_jax.models import cudnn as cudnn_model  # noqa: PLC0415
  model = cudnn_model.CudnnLanguageModel(vocab_size=vocab, hidden_size=hidden, num_layers=2)
  optimizer = sgd_optimizer()
  state = train_state_lib.create_train_state(model, optimizer, seed=0, batch_size=batch)
  tokens = jnp.zeros((batch, steps), jnp.int32)
  step = jax.jit(lambda s, x, y: train.train_step(s, x, y, model=model, optimizer=optimizer, carry_state=True))
  return step, (state, tokens, tokens)


def cudnn_train_step(platform: str = "cuda") -> tuple[str, list[str]]:
  """``("lowered", custom calls)`` where the CUDA jaxlib is installed, else ``("traced", cuDNN primitives found in
  the train step's jaxpr)``."""
  step, args = _cudnn_step()
  try:
    exported = export.export(step, platforms=[platform])(*args)
    return "lowered", sorted(set(re.findall(r"custom_call @([\w$.]+)", exported.mlir_module())))
  except Exception:  # noqa: BLE001 (no CUDA plugin: trace instead)
    with _placeholder_cudnn_sizes():
      jaxpr = str(jax.make_jaxpr(step)(*args))
    return "traced", [name for name in CUDNN_PRIMITIVES if re.search(rf"\b{name}\[", jaxpr)]


def _cudnn_line() -> tuple[str, bool]:
  name = "cudnn lstm (float32)"
  try:
    how, found = cudnn_train_step()
  except Exception as e:  # noqa: BLE001
    return f"{name:34s} cuda  FAILED: {type(e).__name__}: {str(e)[:200]}", False
  expected = CUDNN_CALLS if how == "lowered" else CUDNN_PRIMITIVES
  ok = all(any(e in f for f in found) for e in expected)
  note = "" if how == "lowered" else " (traced, not lowered: this jaxlib has no CUDA plugin)"
  return f"{name:34s} cuda  {'ok' if ok else 'MISSING'}{note}: {', '.join(found) or 'none found'}", ok


def lowering_report(platforms: list[str]) -> tuple[list[str], bool]:
  """One line per (implementation, cell, dtype, platform); whether every kernel lowered with its expected custom
  call."""
  lines, ok = [], True
  for platform in platforms:
    for cell in model_lib.PALLAS:
      for dtype in ("float32", "bfloat16"):
        line, found = _pallas_line(platform, cell, dtype)
        lines.append(line)
        ok &= found
    if platform == "cuda":
      line, found = _cudnn_line()
      lines.append(line)
      ok &= found
  return lines, ok
