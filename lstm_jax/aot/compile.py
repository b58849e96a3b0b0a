"""Compiling a config's programs for a chip this machine lacks, and the one-line result per target.

The programs are the run's own functions, not copies: the train step (``lstm_jax.train.loop.compile_train_step``, the
state donated), the evaluation forward (``lstm_jax.train.evaluate._chunk_sums``, what validation runs per minibatch)
and, with ``members``, the population step (``lstm_jax.sweeps.population.Population``'s vmapped, masked step over K
members). Their arguments are ``jax.ShapeDtypeStruct``s from ``jax.eval_shape`` (no data, no parameters are
materialised) carrying the shardings a real run uses on the target's devices (``lstm_jax.train.sharding``): a 1-D mesh
over the target's devices; data parallel: state replicated, the ``[batch, time]`` tokens and the carried state
``[batch, hidden]`` split by batch row; population: every ``[K, ...]`` array split by member. Each is lowered inside
``jax.default_device(device)`` (Pallas's Triton lowering reads the chip from it) and compiled by the chip's own
compiler (XLA:GPU with Triton / LLVM / ptxas; XLA:TPU with Mosaic).

Memory figures are per device, in bytes, from ``compiled.memory_analysis()``: arguments, outputs, temporaries,
generated code; the total is arguments + outputs - aliased (donated buffers reused for outputs) + temporaries +
code, compared with the chip's memory (``Target.memory_bytes``). What this proves: the chip's compiler accepts
the program and it fits in the chip's memories. What it does not: how fast it runs.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax.aot.targets import Target
from lstm_jax.train import evaluate as evaluate_lib
from lstm_jax.train import loop as train_lib
from lstm_jax.train import sharding as sharding_lib
from lstm_jax.train.state import create_train_state

MIB = 1 << 20
# Custom calls XLA itself inserts for sharding; not kernels.
_NOT_KERNELS = {"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape", "annotate_device_placement",
                "MoveToHost", "MoveToDevice", "LayoutConstraint"}
CUDNN_NOTE = ("cuDNN's RNN cannot be compiled without a GPU: its lowering asks a live cuDNN handle for workspace "
              "sizes (compile a scratch recurrence instead: --config.model.implementation=scratch)")


@dataclasses.dataclass(frozen=True)
class Memory:
  """Per-device bytes of a compiled program (``compiled.memory_analysis()``)."""
  arguments: int
  outputs: int
  aliased: int
  temporaries: int
  code: int

  @property
  def total(self) -> int:
    return self.arguments + self.outputs - self.aliased + self.temporaries + self.code

  def describe(self) -> str:
    """"1.2 MiB arguments + 1.2 MiB outputs - 1.2 MiB aliased + 13.4 MiB temporaries = 14.6 MiB" (code and
    aliasing shown where non-zero)."""
    terms = [f"{format_bytes(self.arguments)} arguments", f"+ {format_bytes(self.outputs)} outputs"]
    terms += [f"- {format_bytes(self.aliased)} aliased"] if self.aliased else []
    terms += [f"+ {format_bytes(self.temporaries)} temporaries"]
    terms += [f"+ {format_bytes(self.code)} code"] if self.code else []
    return " ".join(terms) + f" = {format_bytes(self.total)}"

  @classmethod
  def of(cls, compiled) -> "Memory":
    stats = compiled.memory_analysis()
    get = lambda name: int(getattr(stats, name, 0) or 0)
    return cls(get("argument_size_in_bytes"), get("output_size_in_bytes"), get("alias_size_in_bytes"),
               get("temp_size_in_bytes"), get("generated_code_size_in_bytes"))


@dataclasses.dataclass
class Program:
  """One compiled (or failed) program: ``name`` ("train", "eval", "population 4"), lower + compile seconds, the
  kernels found (custom-call target -> count), memory per device, and the compiler's message shortened to one line
  when it failed (``error``)."""
  name: str
  seconds: float = 0.0
  kernels: dict[str, int] = dataclasses.field(default_factory=dict)
  memory: Memory | None = None
  error: str = ""


@dataclasses.dataclass
class TargetResult:
  """What one target gave: its programs, the recurrence used and the chip's memory per device (bytes or None)."""
  target: str
  chip: str
  devices: int
  recurrence: str
  memory_bytes: int | None
  programs: list[Program] = dataclasses.field(default_factory=list)
  error: str = ""   # set when nothing could be compiled (e.g. cuDNN)
  estimates: Any = None  # lstm_jax.aot.estimate.TargetEstimates, when asked for

  def problems(self) -> list[str]:
    """Why the target fails: a program's compile error, or a program that does not fit the chip's memory."""
    found = [self.error] if self.error else []
    by_error: dict[str, list[str]] = {}
    for p in self.programs:
      if p.error:
        by_error.setdefault(p.error, []).append(p.name)
    found += [f"{', '.join(names)}: {error}" for error, names in by_error.items()]
    for p in self.programs:
      if p.error:
        continue
      if self.memory_bytes and p.memory.total > self.memory_bytes:
        found.append(f"{p.name}: does not fit: needs {format_bytes(p.memory.total)} of "
                     f"{format_bytes(self.memory_bytes)} per device")
    return found

  @property
  def ok(self) -> bool:
    return not self.problems()

  def line(self) -> str:
    """One line: "ok" or "FAILED (why)", then per program its seconds and per-device memory, the recurrence and
    the kernels found."""
    head = f"{self.target} ({self.chip} x{self.devices})"
    if self.error:
      return f"{head}: FAILED ({self.error})"
    problems = self.problems()
    parts = []
    for p in self.programs:
      if p.error:
        parts.append(f"{p.name} failed after {p.seconds:.1f} s")
        continue
      m = p.memory
      parts.append(f"{p.name} {p.seconds:.1f} s, per device {m.describe()} of {format_bytes(self.memory_bytes)}")
    kernels = collections.Counter()
    for p in self.programs:
      kernels.update(p.kernels)
    found = ", ".join(f"{k} x{n}" for k, n in sorted(kernels.items())) or "none"
    status = "ok" if not problems else "FAILED (" + "; ".join(problems) + ")"
    return f"{head}: {status}; " + "; ".join(parts) + f"; recurrence {self.recurrence}; kernels: {found}"


def format_bytes(n: int | None) -> str:
  if n is None:
    return "? (chip memory unknown)"
  if n >= 1 << 30:
    return f"{n / (1 << 30):.1f} GiB"
  return f"{n / MIB:.1f} MiB"


_SHORTAGES = (  # (pattern, groups of: memory space, needed, available) of the compilers' out-of-memory messages
    (r"Allocation \(size=(\d+)\) would exceed memory \(size=(\d+)\).*?space=(\w+)", (3, 1, 2)),
    (r"Ran out of memory in memory space (\w+)\. Used ([\d.]+\s*[KMGT]?i?B?) of ([\d.]+\s*[KMGT]?i?B?)", (1, 2, 3)),
    (r"Ran out of memory (?:in memory space |on )?(\w+).*?size ([\d.]+\s*[KMGT]?i?B?) and limit "
     r"([\d.]+\s*[KMGT]?i?B?)", (1, 2, 3)),
    (r"Ran out of memory (?:in memory space |on )?(\w+).*?\(([\d.]+\s*[KMGT]?i?B?)\) exceeds (?:the )?"
     r"(?:available|limit)[^(]*\(([\d.]+\s*[KMGT]?i?B?)\)", (1, 2, 3)),
    (r"[Ss]hared memory size limit exceeded.*?(\d+).*?(\d+)", (None, 1, 2)),
)


def _size(text: str) -> str:
  """A byte count ("268435456") as MiB; a size the compiler already wrote with a unit ("62.42G") as it is."""
  return format_bytes(int(text)) if text.isdigit() else text


def short_error(error: BaseException) -> str:
  """The compiler's message in one line: a memory shortage as "VMEM: needs 256.0 MiB of 128.0 MiB" (HBM, shared
  memory alike), else its first line naming an error, at most 200 characters."""
  text = str(error)
  flat = " ".join(text.split())
  for pattern, (space, needed, available) in _SHORTAGES:
    found = re.search(pattern, flat)
    if found:
      where = found.group(space).upper() if space else "shared memory"
      return f"{where}: needs {_size(found.group(needed))} of {_size(found.group(available))}"
  lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(("---", "==="))]
  first = next((ln for ln in lines if re.search(r"RESOURCE_EXHAUSTED|INTERNAL|INVALID_ARGUMENT|[Ee]rror", ln)),
               lines[0] if lines else "")
  return f"{type(error).__name__}: {first}"[:200] if first else type(error).__name__


def kernels_in(lowered_text: str) -> dict[str, int]:
  """Custom-call targets in a lowered module's text (the Pallas kernels: ``tpu_custom_call``,
  ``__gpu$xla.gpu.triton``; cuDNN's ``cudnn_rnn_ffi``), with counts; XLA's sharding markers left out."""
  names = re.findall(r"custom_call\s*@([\w$.]+)", lowered_text)
  return dict(collections.Counter(n for n in names if n not in _NOT_KERNELS))


def _structs(tree: Any, sharding_of: Callable[[Any], Any]) -> Any:
  """``jax.ShapeDtypeStruct`` of every leaf of ``tree`` (abstract or concrete) with ``sharding_of(leaf)``."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding_of(x)), tree)


def compile_program(name: str, target: Target, fn, *args, **kwargs) -> Program:
  """Lowers and compiles ``fn(*args, **kwargs)`` (a jitted function, struct arguments) for ``target``."""
  program = Program(name)
  start = time.perf_counter()
  try:
    with jax.default_device(target.devices[0]):
      lowered = fn.lower(*args, **kwargs)
      program.kernels = kernels_in(lowered.as_text())
      compiled = lowered.compile()
    program.memory = Memory.of(compiled)
  except Exception as e:  # noqa: BLE001 (the compiler's message becomes the report line)
    program.error = short_error(e)
  program.seconds = time.perf_counter() - start
  return program


def train_program(target: Target, model, optimizer, batch_size: int, num_steps: int, carry_state: bool,
                  seed: int = 0) -> Program:
  """The data-parallel train step on ``[batch_size, num_steps]`` int32 tokens, compiled for ``target``."""
  mesh = sharding_lib.mesh(list(target.devices))
  state = jax.eval_shape(lambda: create_train_state(model, optimizer, seed, batch_size))
  replicated, split = sharding_lib.replicated(mesh), sharding_lib.leading_axis(mesh, batch_size)
  state = _structs(state._replace(carry=None), lambda x: replicated)._replace(
      carry=_structs(state.carry, lambda x: split))
  tokens = jax.ShapeDtypeStruct((batch_size, num_steps), jnp.int32, sharding=split)
  step = train_lib.compile_train_step(model, optimizer, carry_state)
  with jax.set_mesh(mesh):  # as train.compile_train_step traces it on several devices
    return compile_program("train", target, step, state, tokens, tokens)


def eval_program(target: Target, model, batch_size: int, num_steps: int, seed: int = 0) -> Program:
  """The evaluation forward of one ``[batch_size, num_steps]`` minibatch (summed NLL, carry out)."""
  mesh = sharding_lib.mesh(list(target.devices))
  replicated, split = sharding_lib.replicated(mesh), sharding_lib.leading_axis(mesh, batch_size)
  params = _structs(jax.eval_shape(model.init, jax.random.key(seed)), lambda x: replicated)
  carry = _structs(jax.eval_shape(lambda: model.zero_carry(batch_size)), lambda x: split)
  tokens = jax.ShapeDtypeStruct((batch_size, num_steps), jnp.int32, sharding=split)
  with jax.set_mesh(mesh):
    return compile_program("eval", target, evaluate_lib._chunk_sums, model, params, tokens, tokens, carry)


def population_program(target: Target, config, vocab_size: int, members: int) -> Program:
  """The population step of ``members`` copies of ``config`` (members split over the target's devices)."""
  from lstm_jax.sweeps import population as population_lib  # noqa: PLC0415
  population = population_lib.Population([config] * members, vocab_size, devices=list(target.devices),
                                          target=target.platform)
  split = sharding_lib.leading_axis(population.mesh, members)
  states = _structs(jax.eval_shape(population._init, population.seeds, population.learning_rates,
                                   population.clip_norms), lambda x: split)
  d = config.data
  tokens = jax.ShapeDtypeStruct((members, d.batch_size, d.num_steps), jnp.int32, sharding=split)
  active = jax.ShapeDtypeStruct((members,), jnp.bool_, sharding=split)
  return compile_program(f"population {members}", target, population._step, states, tokens, tokens, active)


def recurrence_of(model, batch: int, steps: int) -> str:
  """The recurrence a model runs on ``[batch, steps]`` minibatches: the scratch model's choice, else its
  implementation's."""
  if hasattr(model, "recurrence_for"):
    return model.recurrence_for(batch, steps)
  return f"{type(model).__name__} (lax.scan)"
