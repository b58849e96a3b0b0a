"""Lowering of whole accelerator train steps on any machine (``jax.export`` for a platform this host lacks):
one line per (implementation, platform) with the kernels' custom-call targets found in the lowered module.

``python -m lstm_jax.commands.benchmark --lower_only --platforms=cuda,tpu``. The Pallas recurrences lower here;
cuDNN's LSTM (``jax.experimental.rnn.lstm``) sizes its workspace through the CUDA jaxlib at lowering time, so on a
host without it that row says so instead of lowering.
"""

from __future__ import annotations

import contextlib
import re

import jax
import jax.numpy as jnp
from jax import export

from lstm_jax import model as model_lib
from lstm_jax import train
from lstm_jax import train_state as train_state_lib
from lstm_jax.benchmarks.train_step import sgd_optimizer

TRITON_CALL = "__gpu$xla.gpu.triton"
EXPECTED = {"cuda": TRITON_CALL, "tpu": "tpu_custom_call"}


def _target(platform: str):
  """jax >= 0.11 lowers Triton kernels for a named GPU; without one here, an abstract H200."""
  if platform != "cuda" or not hasattr(jax.sharding, "AbstractDevice"):
    return contextlib.nullcontext()
  device = jax.sharding.AbstractDevice(device_kind="NVIDIA H200", num_cores=132, platform="gpu")
  return jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("x",), abstract_device=device))


def lower_train_step(platform: str, cell: str = "lstm", hidden: int = 32, batch: int = 4, steps: int = 5,
                     vocab: int = 11, matmul_dtype: str = "float32") -> list[str]:
  """Lowers one SGD train step of the scratch model with ``recurrence=pallas`` for ``platform``; returns the
  custom-call targets of the lowered module (raises if lowering fails)."""
  model = model_lib.LanguageModel(vocab_size=vocab, hidden_size=hidden, cell=cell, recurrence="pallas",
                                  matmul_dtype=matmul_dtype, kernel_target=platform)
  optimizer = sgd_optimizer()
  state = train_state_lib.create_train_state(model, optimizer, seed=0, batch_size=batch)
  tokens = jnp.zeros((batch, steps), jnp.int32)
  step = jax.jit(lambda s, x, y: train.train_step(s, x, y, model=model, optimizer=optimizer, carry_state=True))
  with _target(platform):
    exported = export.export(step, platforms=[platform],
                             disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON_CALL)])(state, tokens,
                                                                                                    tokens)
  return sorted(set(re.findall(r"custom_call @([\w$.]+)", exported.mlir_module())))


def lowering_report(platforms: list[str]) -> tuple[list[str], bool]:
  """One line per (implementation, platform); whether every kernel lowered with its expected custom call."""
  lines, ok = [], True
  for platform in platforms:
    for dtype in ("float32", "bfloat16"):
      name = f"pallas lstm ({dtype})"
      try:
        calls = lower_train_step(platform, matmul_dtype=dtype)
        found = EXPECTED.get(platform) in calls
        ok &= found
        lines.append(f"{name:24s} {platform:5s} {'ok' if found else 'MISSING'}: {', '.join(calls) or 'no custom call'}")
      except Exception as e:  # noqa: BLE001 (a report line per failure, then a non-zero exit)
        ok = False
        lines.append(f"{name:24s} {platform:5s} FAILED: {type(e).__name__}: {str(e)[:200]}")
    if platform == "cuda":
      lines.append(f"{'cudnn lstm':24s} cuda  not lowered here: jax.experimental.rnn sizes cuDNN's workspace through "
                   f"the CUDA jaxlib at lowering time (run on a GPU machine)")
  return lines, ok
