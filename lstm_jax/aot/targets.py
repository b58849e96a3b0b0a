"""Target names -> compile-only devices of a chip this machine does not have.

Names: ``h100``, ``h200``, ``a100`` (one GPU; ``h100x8``: one host with 8 GPUs, topology "1x1x8"), described by
the ``chips/<name>.textproto`` files beside this module (XLA ``GpuTargetConfigProto`` text, the vendors' published
figures, the chip's memory in ``device_memory_size``); and any TPU topology name jax accepts (``v5e:1x1``,
``v6e:1x1``, ``v5p:1x1x1``, ``v5e:2x2`` = 4 chips, ``v4:2x2x1`` = 8 chips), whose chips' HBM sizes are in
``TPU_HBM_BYTES`` (Google Cloud's published per-chip figures).

Both families live in one process: libtpu and the CUDA plugin's compile-only client coexist (checked with jax
0.12.0.1, libtpu 0.0.52, jax-cuda12-plugin 0.12.0.1), so no subprocess per family is needed. ``JAX_PLATFORMS``
must be ``cpu`` before JAX starts its backends, or the CUDA plugin tries to start the absent driver
(``use_cpu_backend``). libtpu's start-up warnings about TPU_ACCELERATOR_TYPE / TPU_WORKER_HOSTNAMES, written
straight to file descriptor 2, are swallowed while the TPU topology is created (``_quiet_stderr``); they come
back only inside the error when creating it fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import pathlib
import re
import tempfile
from typing import Any, Iterator

import jax

from lstm_jax.models.placement import Placement

CHIPS_DIR = pathlib.Path(__file__).resolve().parent / "chips"
GIB = 1 << 30
# HBM per chip (= per JAX device on these generations), bytes: cloud.google.com/tpu/docs/system-architecture-tpu-vm.
TPU_HBM_BYTES = {"v4": 32 * GIB, "v5e": 16 * GIB, "v5litepod": 16 * GIB, "v5p": 95 * GIB, "v6e": 32 * GIB}
TPU_EXAMPLES = ("v5e:1x1", "v6e:1x1", "v5p:1x1x1", "v5e:2x2", "v4:2x2x1")
_GPU_NAME = re.compile(r"^([a-z]\d+)(?:x(\d+))?$")
_TPU_NAME = re.compile(r"^(v\d+[a-z]*)[:=_](\d+(?:x\d+)*)$")
AOT_INSTALL = "pip install -e '.[aot]' (Python 3.12+)"
PACKAGES = {"tpu": {"libtpu": "libtpu"},
            "cuda": {"jax-cuda12-plugin": "jax_cuda12_plugin", "jax-cuda12-pjrt": "jax_plugins.xla_cuda12",
                     "nvidia-cuda-nvcc-cu12": "nvidia.cuda_nvcc", "nvidia-nvjitlink-cu12": "nvidia.nvjitlink"}}


class UnknownTargetError(ValueError):
  """A target name that names no chip description or TPU topology (the command exits 2)."""


class MissingPackagesError(RuntimeError):
  """The compiler packages for a target family are not installed (the command exits 1)."""


@dataclasses.dataclass(frozen=True)
class Target:
  """A compile-only target: its name, ``platform`` ("cuda" / "tpu", as ``Placement.target`` spells it), its
  devices (one per chip), the chip's name and its memory per device in bytes (None: not known)."""
  name: str
  platform: str
  devices: tuple[Any, ...]
  chip: str
  memory_bytes: int | None

  @property
  def placement(self) -> Placement:
    """Where a model compiled for this target runs: kernels for its platform, the batch over all its devices."""
    return Placement(self.platform, devices=len(self.devices))


def gpu_chips() -> list[str]:
  """The GPU chips with a description in ``chips/`` (``h100``, ...)."""
  return sorted(p.stem for p in CHIPS_DIR.glob("*.textproto"))


def known_targets() -> str:
  """The target names, as a one-line hint."""
  return (", ".join(gpu_chips()) + " (GPU; h100x8 = one host with 8), or a TPU topology such as "
          + ", ".join(TPU_EXAMPLES))


def chip_memory_bytes(text: str) -> int:
  """``device_memory_size`` of a ``GpuTargetConfigProto`` text."""
  found = re.search(r"device_memory_size:\s*(\d+)", text)
  if not found:
    raise ValueError("the chip description has no gpu_device_info.device_memory_size")
  return int(found.group(1))


def family(name: str) -> str:
  """"cuda" or "tpu" for a well-formed name; raises ``UnknownTargetError`` for any other."""
  gpu = _GPU_NAME.match(name)
  if gpu and gpu.group(1) in gpu_chips() and (gpu.group(2) is None or int(gpu.group(2)) >= 1):
    return "cuda"
  if _TPU_NAME.match(name):
    return "tpu"
  raise UnknownTargetError(f"unknown target {name!r}; known targets: {known_targets()}.")


def missing_packages(platform: str) -> list[str]:
  """The compiler packages ``platform`` needs that are not installed (pip names)."""
  def absent(module: str) -> bool:
    try:
      return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
      return True
  return [pip_name for pip_name, module in PACKAGES[platform].items() if absent(module)]


def check_packages(platform: str) -> None:
  missing = missing_packages(platform)
  if missing:
    what = "a GPU" if platform == "cuda" else "a TPU"
    raise MissingPackagesError(f"compiling for {what} needs {', '.join(missing)}, not installed here: {AOT_INSTALL}.")


def use_cpu_backend() -> None:
  """Makes JAX start only its CPU backend (before any computation; a no-op once backends run)."""
  os.environ["JAX_PLATFORMS"] = "cpu"
  with contextlib.suppress(Exception):
    jax.config.update("jax_platforms", "cpu")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[list[str]]:
  """Sends file descriptor 2 to a temporary file for the block (libtpu writes there from C++); yields a list that
  holds the captured lines afterwards."""
  captured: list[str] = []
  with tempfile.TemporaryFile(mode="w+b") as sink:
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    try:
      yield captured
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      sink.seek(0)
      captured.extend(sink.read().decode(errors="replace").splitlines())


def _tpu_topology(name: str):
  from jax.experimental import topologies  # noqa: PLC0415
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compile-only: no chip to share, skip libtpu's lockfile
  os.environ.setdefault("TPU_STDERR_LOG_LEVEL", "3")
  os.environ.setdefault("TPU_MIN_LOG_LEVEL", "3")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  with _quiet_stderr():
    try:
      return topologies.get_topology_desc(topology_name=name, platform="tpu")
    except Exception as e:  # noqa: BLE001 (jax raises several types for a name it rejects)
      message = " ".join(str(e).split())[:200]
      if re.search(r"topology|accelerator type|Unknown|Invalid|INVALID_ARGUMENT|NOT_FOUND", message):
        raise UnknownTargetError(f"unknown target {name!r}: libtpu refused the topology ({message}); known "
                                 f"targets: {known_targets()}.") from None
      raise MissingPackagesError(f"libtpu could not start for {name!r}: {message}") from None


def resolve(name: str) -> Target:
  """The compile-only devices of target ``name``; raises ``UnknownTargetError`` or ``MissingPackagesError``."""
  platform = family(name)
  check_packages(platform)
  use_cpu_backend()
  if platform == "tpu":
    generation = _TPU_NAME.match(name).group(1)
    devices = tuple(_tpu_topology(name).devices)
    return Target(name, "tpu", devices, devices[0].device_kind, TPU_HBM_BYTES.get(generation))
  from jax.experimental import topologies  # noqa: PLC0415
  chip, count = _GPU_NAME.match(name).groups()
  text = (CHIPS_DIR / f"{chip}.textproto").read_text()
  try:
    topology = topologies.get_topology_desc(chip, "cuda", target_config=text, topology=f"1x1x{int(count or 1)}")
  except NotImplementedError as e:  # the plugin failed to start with the backends (no driver) and left no topology
    raise MissingPackagesError(f"the CUDA plugin offers no compile-only topology ({e}): JAX started its backends "
                               f"before JAX_PLATFORMS=cpu; run the compile in a fresh process.") from None
  devices = tuple(topology.devices)
  return Target(name, "cuda", devices, devices[0].device_kind, chip_memory_bytes(text))


def resolve_all(names: list[str]) -> list[Target]:
  """Every name checked first (so a typo in the last one fails before any compile), then resolved."""
  if not names:
    raise UnknownTargetError(f"no target given: pass --target NAME (known targets: {known_targets()}).")
  for name in names:
    family(name)
  return [resolve(name) for name in names]
