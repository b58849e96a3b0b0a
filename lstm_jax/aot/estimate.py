"""Estimated train-step time of every recurrence on a compile-only target, from what the target's compiler says.

For each candidate (``model.candidates()``: the Pallas kernel inside its envelope, fused_vjp, scan) the train step
is compiled for the target with the compilers' dumps on (``lstm_jax.estimates.evidence.dump_environment``, set by
``lstm-jax-compile`` before JAX starts); the dump gives the structure (GPU: the kernels' grids, registers and
while-loop launches; TPU: the Pallas kernels' static cycles per step), which ``lstm_jax.estimates.step_time``
turns into seconds with the chip's figures. Where the dump is absent (dumps off, or XLA's loop on a TPU, whose
schedule is split over many fusions) the structure is the model's prediction, and the estimate says so.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil

import jax

from lstm_jax.aot import compile as compile_lib
from lstm_jax.aot.targets import Target
from lstm_jax.estimates import chips as chips_lib
from lstm_jax.estimates import evidence
from lstm_jax.estimates import step_time


@dataclasses.dataclass
class TargetEstimates:
  """The estimates of every candidate on one target, and what ``auto`` takes there."""
  target: str
  shape: step_time.Shape
  chip: str
  estimates: dict[str, step_time.Estimate]
  auto: str

  def line(self) -> str:
    """"  estimates for h100, batch 64 x 100 (not measurements): fused_vjp ~0.83 M tokens/s (...) | ...; auto
    takes fused_vjp"."""
    ranked = sorted(self.estimates.values(), key=lambda e: e.step_seconds)
    parts = [f"{e.describe()[:-1]}; {'compiler' if e.source == 'compiler' else 'model'})" for e in ranked]
    best = ranked[0].recurrence if ranked else "?"
    differs = f" (the compiler's figures put {best} first)" if ranked and best != self.auto else ""
    return (f"  estimated train step on {self.chip}, batch {self.shape.batch} x {self.shape.steps} "
            f"(estimates, not measurements): " + " | ".join(parts) + f"; auto takes {self.auto}{differs}")


def dump_root() -> pathlib.Path | None:
  """The folder the compilers dump into when ``lstm-jax-compile`` turned the dumps on, else None."""
  flags = os.environ.get("XLA_FLAGS", "")
  for flag in flags.split():
    if flag.startswith("--xla_dump_to="):
      return pathlib.Path(flag.split("=", 1)[1]).parent
  return None


def _files(root: pathlib.Path) -> set[pathlib.Path]:
  return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def _structure(case_dir: pathlib.Path, target: Target, shape, recurrence: str, chip):
  if target.platform == "cuda":
    return evidence.gpu_structures(case_dir, shape, recurrence, chip)
  if recurrence == "pallas":
    return evidence.tpu_structure(case_dir, shape, chip)
  return None


def compile_and_estimate(target: Target, model, optimizer, batch: int, steps: int, carry_state: bool,
                         seed: int = 0) -> tuple[compile_lib.Program, step_time.Estimate]:
  """Compiles ``model``'s train step for ``target`` (its recurrence as set) and estimates it: from the compiler's
  dump when the dumps are on and hold the structure, else from the model's prediction."""
  with jax.default_device(target.devices[0]):
    chip_name, _ = chips_lib.current(model.platform)
    recurrence = model.recurrence_for(batch, steps)
  chip = chips_lib.CHIPS[chip_name]
  shape = model.shape(batch, steps)
  root = dump_root()
  before = _files(root) if root is not None else set()
  program = compile_lib.train_program(target, model, optimizer, batch, steps, carry_state, seed)
  structure = None
  if root is not None:
    case_dir = root / f"case-{target.name.replace(':', '_')}-{recurrence}"
    case_dir.mkdir(parents=True, exist_ok=True)
    for path in _files(root) - before:
      if case_dir not in path.parents:
        shutil.move(str(path), case_dir / path.name)
    if not program.error:
      structure = _structure(case_dir, target, shape, recurrence, chip)
    shutil.rmtree(case_dir, ignore_errors=True)
  structure = structure or step_time.predict(shape, recurrence, chip)
  return program, step_time.estimate(shape, structure, chip)


def target_estimates(model, optimizer, target: Target, batch: int, steps: int, carry_state: bool,
                     seed: int = 0) -> TargetEstimates:
  """Compiles ``model``'s train step once per candidate recurrence for ``target`` and estimates each."""
  with jax.default_device(target.devices[0]):
    chip_name, _ = chips_lib.current(model.platform)
    auto = model.recurrence_for(batch, steps)
    candidates = model.candidates()
  found = {r: compile_and_estimate(target, dataclasses.replace(model, recurrence=r), optimizer, batch, steps,
                                   carry_state, seed)[1] for r in candidates}
  return TargetEstimates(target.name, model.shape(batch, steps), chip_name, found, auto)
