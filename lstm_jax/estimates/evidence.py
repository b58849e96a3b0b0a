"""What the chips' compilers say about a compiled train step, read from their dumps on this machine (no chip):
the structure ``lstm_jax.estimates.step_time`` turns into seconds.

- GPU: XLA's thunk sequence (``*thunk_sequence_after_thunk_passes.txt`` under ``--xla_dump_to``) lists every
  kernel launch with its grid, threads and shared memory, and each while loop's condition and body (command
  buffers and the kernels in them). ``ptxas -v`` on the PTX of a Pallas kernel (``*.ptx`` in the same dump) gives
  its registers and spills per thread.
- TPU: libtpu's final bundle schedule (``--xla_jf_dump_to`` with ``--xla_jf_dump_llo_text``) has one file per
  Mosaic kernel; the bundles of its innermost loop (the step loop: the deepest ``>`` markers) span the static
  cycles of one step, one bundle issued per cycle, dynamic stalls excluded.

``dump_environment`` gives the variables that make the compilers write these dumps; they must be set before JAX
starts its backends (``lstm-jax-compile`` sets them at start).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import subprocess

from lstm_jax.estimates import step_time

PALLAS_GPU_KERNELS = {"forward": re.compile(r"^\w+_forward"), "backward": re.compile(r"^\w+_backward$")}
PALLAS_TPU_KERNELS = {"forward": re.compile(r"jvp_\w+_forward"), "backward": re.compile(r"transpose_jvp_\w+_backward")}
_LAUNCH = re.compile(r"^(\s*)\d+:\s+(\w+)\s*\[[^\]]*\]\s*(\S*)(?:\s+grid:\s*\[(\d+),\s*(\d+),\s*(\d+)\]\s+threads:\s*"
                     r"\[(\d+),\s*(\d+),\s*(\d+)\]\s+shared_memory:\s*(\d+))?")
_BUNDLE = re.compile(r"^\s*(0x[0-9a-f]+|\d+)\s+(?:[A-Z]{2})?:?\s*(>*)\s*\{")


def dump_environment(directory: str | pathlib.Path) -> dict[str, str]:
  """Environment variables that make XLA:GPU and libtpu dump what this module reads into ``directory``."""
  directory = pathlib.Path(directory)
  # LLVM_DISABLE_SYMBOLIZATION: with the emitters' dumps on, LLVM symbolizes a stack trace per dump (an
  # llvm-symbolizer process each time: a 4 s compile took 70 s).
  return {"LLVM_DISABLE_SYMBOLIZATION": "1",
          "XLA_FLAGS": f"--xla_dump_to={directory / 'xla'} --xla_dump_emitter_re=.*",
          "LIBTPU_INIT_ARGS": (f"--xla_jf_dump_to={directory / 'tpu'} --xla_jf_dump_llo_text=true "
                               "--xla_jf_dump_llo_pass_label_regex=final_bundles")}


@dataclasses.dataclass(frozen=True)
class Launch:
  """One line of the thunk sequence: its indentation, kind (kCustomKernel, kCommandBuffer, kWhile, ...), kernel
  name, grid programs, threads per program and shared memory per program."""
  indent: int
  kind: str
  name: str
  programs: int = 0
  threads: int = 0
  shared_memory: int = 0


def parse_thunks(text: str) -> list[Launch]:
  """Every thunk line of a thunk-sequence dump; "condition:" and "body:" lines as kinds of their own."""
  launches = []
  for line in text.splitlines():
    stripped = line.strip()
    if stripped in ("condition:", "body:"):
      launches.append(Launch(len(line) - len(line.lstrip()), stripped[:-1], ""))
      continue
    m = _LAUNCH.match(line)
    if not m:
      continue
    grid = [int(g) for g in m.group(4, 5, 6)] if m.group(4) else [0, 0, 0]
    threads = [int(t) for t in m.group(7, 8, 9)] if m.group(7) else [0, 0, 0]
    launches.append(Launch(len(m.group(1)), m.group(2), m.group(3), grid[0] * grid[1] * grid[2],
                           threads[0] * threads[1] * threads[2], int(m.group(10) or 0)))
  return launches


def while_loops(launches: list[Launch]) -> list[step_time.GpuLoop]:
  """Per ``kWhile`` in order, its iteration: kernels launched on the stream (kernels, copies), command buffers,
  kernels inside them, and condition kernels."""
  loops = []
  for i, launch in enumerate(launches):
    if launch.kind != "kWhile":
      continue
    section, counts = None, {"stream": 0, "buffers": 0, "graph": 0, "condition": 0}
    direct_indent = None
    for inner in launches[i + 1:]:
      if inner.kind in ("condition", "body"):
        section, direct_indent = inner.kind, None
        continue
      if inner.indent <= launch.indent:
        break
      direct_indent = inner.indent if direct_indent is None else direct_indent
      if section == "condition":
        counts["condition"] += inner.kind == "kCustomKernel"
      elif inner.indent == direct_indent:
        counts["buffers"] += inner.kind == "kCommandBuffer"
        counts["stream"] += inner.kind in ("kCustomKernel", "kCopy", "kAsyncStart", "kGemm", "kCublasLtMatmul")
      elif inner.kind in ("kCustomKernel", "kGemm", "kCublasLtMatmul"):
        counts["graph"] += _inside_command_buffer(launches, launches.index(inner), direct_indent)
    loops.append(step_time.GpuLoop(counts["stream"], counts["buffers"], counts["graph"], counts["condition"]))
  return loops


def _inside_command_buffer(launches: list[Launch], index: int, direct_indent: int) -> bool:
  """Whether the launch at ``index`` sits under a command buffer at ``direct_indent`` (not an async copy)."""
  for j in range(index - 1, -1, -1):
    if launches[j].indent == direct_indent:
      return launches[j].kind == "kCommandBuffer"
  return False


def ptxas_info(ptx_file: pathlib.Path, arch: str = "sm_90a") -> tuple[int, int] | None:
  """(registers per thread, spill bytes) that ``ptxas -v`` reports for the kernel in ``ptx_file``; None when
  ptxas is not installed (the aot extra's nvidia-cuda-nvcc-cu12 provides it)."""
  ptxas = _ptxas()
  if ptxas is None:
    return None
  result = subprocess.run([ptxas, f"-arch={arch}", "-v", str(ptx_file), "-o", "/dev/null"], capture_output=True,
                          text=True, check=False)
  text = result.stdout + result.stderr
  registers = re.search(r"Used (\d+) registers", text)
  spills = [int(s) for s in re.findall(r"(\d+) bytes spill (?:stores|loads)", text)]
  return (int(registers.group(1)), sum(spills)) if registers else None


def _ptxas() -> str | None:
  try:
    import nvidia.cuda_nvcc  # noqa: PLC0415
  except ImportError:
    return None
  roots = [pathlib.Path(p) for p in getattr(nvidia.cuda_nvcc, "__path__", [])]
  found = [p / "bin" / "ptxas" for p in roots if (p / "bin" / "ptxas").exists()]
  return str(found[0]) if found else None


def step_cycles(bundles_text: str) -> int:
  """Static cycles of one iteration of the innermost loop of a final-bundles dump: the address span of the
  largest contiguous run of bundles at the deepest loop nesting."""
  rows = []
  for line in bundles_text.splitlines():
    m = _BUNDLE.match(line)
    if m:
      rows.append((int(m.group(1), 16) if m.group(1).startswith("0x") else int(m.group(1)), len(m.group(2))))
  if not rows:
    return 0
  deepest = max(depth for _, depth in rows)
  if deepest == 0:
    return 0
  best, start, previous = 0, None, None
  for address, depth in rows:
    if depth == deepest:
      start = address if start is None else start
      previous = address
      best = max(best, previous - start + 1)
    else:
      start = None
  return best


def gpu_structures(dump_dir: pathlib.Path, shape: step_time.Shape, recurrence: str,
                   chip) -> step_time.Structure | None:
  """The structure of ``recurrence`` read from an XLA:GPU dump of the train step, or None when the dump lacks it.
  Pallas: its forward and backward kernels' grids (thunk sequence) and registers (ptxas on their PTX); XLA: the
  first layer's forward and backward while loops."""
  files = sorted(dump_dir.glob("*jit_train_step*thunk_sequence_after_thunk_passes.txt"))
  if not files:
    return None
  launches = parse_thunks(files[-1].read_text())
  if recurrence != "pallas":
    loops = while_loops(launches)
    if len(loops) < 2:
      return None
    return step_time.Structure(recurrence, loops[0], loops[-1], source="compiler")
  predicted = step_time.predict(shape, "pallas", chip)
  arch = "sm_80" if chip.name == "a100" else "sm_90a"
  parts = {}
  for direction, pattern in PALLAS_GPU_KERNELS.items():
    launch = next((l for l in launches if l.kind == "kCustomKernel" and pattern.match(l.name)), None)
    if launch is None:
      return None
    model = getattr(predicted, direction)
    registers, spills = _kernel_registers(dump_dir, launch.name, arch) or (model.registers, 0)
    parts[direction] = dataclasses.replace(model, programs=launch.programs, threads=launch.threads,
                                           shared_memory=launch.shared_memory, registers=registers, spills=spills)
  return step_time.Structure("pallas", parts["forward"], parts["backward"], source="compiler")


def _kernel_registers(dump_dir: pathlib.Path, kernel: str, arch: str) -> tuple[int, int] | None:
  entry = re.compile(rf"\.entry\s+{re.escape(kernel)}\s*\(")
  for ptx in sorted(dump_dir.glob("*.ptx")):
    if entry.search(ptx.read_text(errors="replace")):
      return ptxas_info(ptx, arch)
  return None


def tpu_structure(dump_dir: pathlib.Path, shape: step_time.Shape, chip) -> step_time.Structure | None:
  """The Pallas kernels' structure read from libtpu's final bundles: each kernel's step-loop cycles in place of
  the model's, per batch block (the blocks run one after another on one TensorCore); HBM bytes as the model's."""
  from lstm_jax.kernels import envelope, layout as layout_lib  # noqa: PLC0415
  predicted = step_time.predict(shape, "pallas", chip)
  lay = layout_lib.tpu_layout(envelope.kernel(shape.cell), shape.steps, shape.batch, shape.hidden,
                              shape.matmul_dtype, chip.vmem_bytes)
  if lay is None:
    return None
  batch_blocks, padding = lay.Bp // lay.bB, lay.Tp / shape.steps
  parts = {}
  for direction, pattern in PALLAS_TPU_KERNELS.items():
    files = [f for f in dump_dir.glob("*final_bundles.txt")
             if pattern.search(f.name) and "schedule-analysis" not in f.name]
    cycles = max((step_cycles(f.read_text(errors="replace")) for f in files), default=0)
    if not cycles:
      return None
    model = getattr(predicted, direction)
    parts[direction] = dataclasses.replace(model, cycles=cycles * batch_blocks * padding)
  return step_time.Structure("pallas", parts["forward"], parts["backward"], source="compiler")


@dataclasses.dataclass(frozen=True)
class KernelReport:
  """What the compiler made of one Pallas-Triton kernel: grid programs (thunk sequence), registers and spill bytes
  per thread (ptxas), and counts in its PTX of GPU-scope acquire-release atomics, loads that bypass L1 (``.cg``)
  and tensor-core instructions (``wgmma`` / ``mma.sync``)."""
  name: str
  programs: int
  registers: int
  spill_bytes: int
  acq_rel_atomics: int
  cg_loads: int
  tensor_core_ops: int


def kernel_reports(dump_dir: pathlib.Path, arch: str = "sm_90a") -> dict[str, KernelReport]:
  """Every Pallas-Triton kernel of an XLA:GPU dump (``--xla_dump_emitter_re=.*`` keeps their PTX), by name."""
  launches = [l for f in dump_dir.glob("*thunk_sequence_after_thunk_passes.txt") for l in parse_thunks(f.read_text())]
  reports = {}
  for ptx in sorted(dump_dir.glob("*.ptx")):
    text = ptx.read_text(errors="replace")
    for name in re.findall(r"\.entry\s+(\w+)\s*\(", text):
      launch = next((l for l in launches if l.name == name), None)
      if launch is None:
        continue
      registers, spills = ptxas_info(ptx, arch) or (0, 0)
      reports[name] = KernelReport(name, launch.programs, registers, spills,
                                   len(re.findall(r"atom\.global\.gpu\.acq_rel", text)),
                                   len(re.findall(r"ld\.global\.cg", text)),
                                   len(re.findall(r"wgmma\.mma_async|mma\.sync", text)))
  return reports
