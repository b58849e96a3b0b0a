"""The compile matrix: the train step of every Pallas cell (``model.PALLAS``) x {float32, bfloat16} x workloads
x targets, plus the LSTM's ``fused_vjp`` and ``scan`` rows (float32), compiled for chips this machine lacks
(``lstm_jax.aot``); compile seconds and per-device memory per cell of the table.

    python -m lstm_jax.commands.benchmark --compile_only --targets=h100,v5e:1x1,v6e:1x1 [--markdown=FILE]

Workloads: W1 1x256 batch 32 T 35, W2 2x512 batch 64 T 100, W4 2x1024 batch 128 T 100 (``train_step.WORKLOADS``)
and W5 1x512 batch 16 T 1000 (long sequences); vocabulary 28, SGD with clipping, from a zero state, as the
speed benchmark's train step. Each case runs in a worker subprocess with a per-case timeout: a case that does not
finish in time is reported as such and the worker is replaced, so one slow compile cannot hang the matrix (the
worker is reused across cases that finish, which saves JAX's and libtpu's start-up per case).
"""

from __future__ import annotations

import dataclasses
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator

from lstm_jax.benchmarks import train_step
from lstm_jax.models import scratch as model_lib

WORKLOADS = {**{name: train_step.WORKLOADS[name] for name in ("W1", "W2", "W4")},
             "W5": train_step.Workload("W5", "long sequences: 1x512, batch 16, 1000 steps", 1, 512, 16, 1000)}
DEFAULT_WORKLOADS = ("W1", "W2", "W4", "W5")
DTYPES = ("float32", "bfloat16")
_RESULT = "@@case "


@dataclasses.dataclass(frozen=True)
class Case:
  workload: str
  cell: str
  recurrence: str
  dtype: str
  target: str


@dataclasses.dataclass
class Outcome:
  """A case's result: ``status`` "ok" / "FAILED" / "timeout"; seconds; per-device total and temporaries (bytes)."""
  status: str
  seconds: float
  total: int = 0
  temporaries: int = 0
  error: str = ""
  arguments: int = 0
  kernels: dict[str, int] = dataclasses.field(default_factory=dict)
  estimate: str = ""   # estimated train step: tokens/s, bound, "compiler" / "model" (lstm_jax.aot.estimate)

  def estimate_cell(self) -> str:
    return self.estimate if self.status == "ok" else ""

  def cell(self) -> str:
    from lstm_jax.aot.compile import format_bytes  # noqa: PLC0415
    if self.status == "ok":
      return f"{self.seconds:.1f} s, {format_bytes(self.total)}"
    if self.status == "timeout":
      return f"timeout > {self.seconds:.0f} s"
    return f"FAILED {self.seconds:.1f} s: {self.error}".replace("|", "/")


def cases(targets: list[str], workloads: list[str]) -> list[Case]:
  """Every (workload, cell, recurrence, dtype, target): Pallas for every cell in both dtypes, then the LSTM's
  fused_vjp and scan in float32."""
  rows = [(cell, "pallas", dtype) for cell in model_lib.PALLAS for dtype in DTYPES]
  rows += [("lstm", "fused_vjp", "float32"), ("lstm", "scan", "float32")]
  return [Case(w, cell, rec, dtype, t) for w in workloads for cell, rec, dtype in rows for t in targets]


def compile_case(case: Case) -> Outcome:
  """Compiles one case's train step in this process."""
  from lstm_jax.aot import estimate as estimate_lib  # noqa: PLC0415
  from lstm_jax.aot import targets as targets_lib  # noqa: PLC0415
  target = _target(case.target, targets_lib)
  w = WORKLOADS[case.workload]
  model = model_lib.LanguageModel(vocab_size=train_step.VOCAB, hidden_size=w.hidden, num_layers=w.num_layers,
                                  cell=case.cell, recurrence=case.recurrence, matmul_dtype=case.dtype,
                                  placement=target.placement)
  program, estimate = estimate_lib.compile_and_estimate(target, model, train_step.sgd_optimizer(), w.batch, w.steps,
                                                        carry_state=False)
  if program.error:
    return Outcome("FAILED", program.seconds, error=program.error, kernels=program.kernels)
  m = program.memory
  fits = not target.memory_bytes or m.total <= target.memory_bytes
  return Outcome("ok" if fits else "FAILED", program.seconds, m.total, m.temporaries,
                 "" if fits else "does not fit in the chip's memory", m.arguments, program.kernels,
                 f"{estimate.tokens_per_second / 1e6:.2f} M ({estimate.bound}; {estimate.source})")


_TARGETS: dict[str, Any] = {}


def _target(name: str, targets_lib):
  if name not in _TARGETS:
    _TARGETS[name] = targets_lib.resolve(name)
  return _TARGETS[name]


def serve() -> None:
  """The worker: one JSON case per stdin line -> one ``@@case`` JSON outcome per stdout line."""
  for line in sys.stdin:
    try:
      outcome = compile_case(Case(**json.loads(line)))
    except Exception as e:  # noqa: BLE001 (reported as the case's failure)
      outcome = Outcome("FAILED", 0.0, error=f"{type(e).__name__}: {' '.join(str(e).split())[:160]}")
    print(_RESULT + json.dumps(dataclasses.asdict(outcome)), flush=True)


class _Worker:
  """A ``serve()`` subprocess; ``run(case, timeout)`` returns its outcome or None when it did not answer in time."""

  def __init__(self):
    from lstm_jax.estimates import evidence  # noqa: PLC0415
    self.dumps = tempfile.mkdtemp(prefix="lstm_jax_dumps_")  # the compilers' dumps, read for the estimates
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
           **evidence.dump_environment(self.dumps)}
    self.proc = subprocess.Popen([sys.executable, "-c", "from lstm_jax.benchmarks import compile_matrix as m; "
                                  "m.serve()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    self.selector = selectors.DefaultSelector()
    self.selector.register(self.proc.stdout, selectors.EVENT_READ)

  def run(self, case: Case, timeout: float) -> Outcome | None:
    self.proc.stdin.write(json.dumps(dataclasses.asdict(case)) + "\n")
    self.proc.stdin.flush()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
      if not self.selector.select(left):
        break
      line = self.proc.stdout.readline()
      if not line:  # the worker died (a crash in the compiler)
        return Outcome("FAILED", 0.0, error=f"the compiler process died (exit {self.proc.wait()})")
      if line.startswith(_RESULT):
        return Outcome(**json.loads(line[len(_RESULT):]))
    return None

  def close(self) -> None:
    if self.proc.poll() is None:
      os.killpg(self.proc.pid, 9)
    self.proc.wait()
    shutil.rmtree(self.dumps, ignore_errors=True)


def run_cases(all_cases: list[Case], timeout: float) -> Iterator[tuple[Case, Outcome]]:
  """Each case's outcome as it finishes; a case that runs past ``timeout`` seconds (its target's start-up in a
  fresh worker included) is "timeout"."""
  worker = None
  try:
    for case in all_cases:
      worker = worker or _Worker()
      outcome = worker.run(case, timeout)
      if outcome is None or outcome.error.startswith("the compiler process died"):
        worker.close()
        worker = None
      yield case, outcome or Outcome("timeout", timeout)
  finally:
    if worker is not None:
      worker.close()


def markdown_table(results: list[tuple[Case, Outcome]], targets: list[str], timeout: float) -> str:
  """One row per (workload, cell, recurrence, dtype), one column per target: "seconds, per-device total", then
  one column per target of the estimated train step (tokens/s, bound, read from the compiler or the model)."""
  by_row: dict[tuple, dict[str, Outcome]] = {}
  for case, outcome in results:
    by_row.setdefault((case.workload, case.cell, case.recurrence, case.dtype), {})[case.target] = outcome
  lines = ["| workload | cell | recurrence | matmul dtype | " + " | ".join(targets) + " | "
           + " | ".join(f"{t} estimate" for t in targets) + " |",
           "|---|---|---|---|" + "---|" * (2 * len(targets))]
  for (workload, cell, recurrence, dtype), outcomes in by_row.items():
    cells = [outcomes[t].cell() if t in outcomes else "" for t in targets]
    cells += [outcomes[t].estimate_cell() if t in outcomes else "" for t in targets]
    lines.append(f"| {workload} ({WORKLOADS[workload].description.split(': ')[-1]}) | {cell} | {recurrence} | "
                 f"{dtype} | " + " | ".join(cells) + " |")
  failed = sum(o.status != "ok" for _, o in results)
  lines.append(f"\nTrain step compiled per target (compile seconds, per-device memory: arguments + outputs - "
               f"aliased + temporaries + code); per-case timeout {timeout:.0f} s; {len(results) - failed} of "
               f"{len(results)} cases compiled and fit. Estimates (not measurements; lstm_jax.estimates): tokens/s "
               f"of the train step, the bound of its recurrence, and whether the structure was read from the "
               f"compiler's dump or predicted by the model.")
  return "\n".join(lines)


def check_names(targets: list[str], workloads: list[str]) -> None:
  """Raises ``ValueError`` (one line) for an unknown workload or target name, or missing compiler packages."""
  from lstm_jax.aot import targets as targets_lib  # noqa: PLC0415
  unknown = sorted(set(workloads) - set(WORKLOADS))
  if unknown:
    raise ValueError(f"unknown workloads {unknown} for --compile_only; choose from {sorted(WORKLOADS)}.")
  for name in targets:
    targets_lib.check_packages(targets_lib.family(name))


def run_matrix(targets: list[str], workloads: list[str], timeout: float, print_fn=print) -> tuple[str, bool]:
  """Checks the names (``ValueError``: one line), compiles every case printing one line each as it finishes, and
  returns the Markdown table and whether every case compiled and fit."""
  check_names(targets, workloads)
  results = []
  for case, outcome in run_cases(cases(targets, workloads), timeout):
    estimate = f"; estimated {outcome.estimate}" if outcome.estimate else ""
    print_fn(f"{case.workload} {case.cell} {case.recurrence} {case.dtype} {case.target}: {outcome.cell()}{estimate}")
    results.append((case, outcome))
  return markdown_table(results, targets, timeout), all(o.status == "ok" for _, o in results)


def estimate_table(chip_names=("h100", "v5e", "v6e")) -> str:
  """The step-time model's estimates (``lstm_jax.estimates``) of the LSTM at the matrix's workloads, dated today."""
  import datetime  # noqa: PLC0415
  from lstm_jax.estimates import step_time  # noqa: PLC0415
  shapes = {name: step_time.Shape("lstm", w.num_layers, w.hidden, w.batch, w.steps) for name, w in WORKLOADS.items()}
  return step_time.markdown_table(shapes, list(chip_names), datetime.date.today().isoformat())

