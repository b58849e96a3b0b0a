"""Compiling for chips this machine lacks (``lstm_jax.aot``, ``lstm-jax-compile``, ``benchmark --compile_only``).

The compile tests need the ``aot`` extra (libtpu and the CUDA plugin with ptxas / nvJitLink; ``pip install -e
'.[aot]'``, Python 3.12+) and skip without it. They compile the real train step for ``h100`` and ``v5e:1x1``: W1
(1x256, batch 32, T 35) and W2 (2x512, batch 64, T 100; marked slow: up to about 20 s a case on a TPU target
here) for every Pallas cell in float32 and bfloat16, in one worker subprocess (the matrix's own), which
starts JAX with ``JAX_PLATFORMS=cpu`` as the command does. The command's bad inputs run as subprocesses: one
line, the exit status, no traceback. The message shortening, the fit check and the missing-package line need no
compiler and always run.
"""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from lstm_jax import config as config_lib
from lstm_jax.aot import compile as compile_lib
from lstm_jax.aot import targets as targets_lib
from lstm_jax.benchmarks import compile_matrix, train_step
from lstm_jax.data import corpora
from lstm_jax.models import scratch as model_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "experiments" / "timemachine_lstm.py")
MISSING = targets_lib.missing_packages("tpu") + targets_lib.missing_packages("cuda")
needs_aot = pytest.mark.skipif(bool(MISSING), reason=f"the aot extra is not installed (missing {', '.join(MISSING)}):"
                               f" {targets_lib.AOT_INSTALL}")
TARGETS = ("h100", "v5e:1x1")
EXPECTED_KERNEL = {"h100": "__gpu$xla.gpu.triton", "v5e:1x1": "tpu_custom_call", "h100x8": "__gpu$xla.gpu.triton",
                   "v5e:2x2": "tpu_custom_call"}
W1_CASES = [compile_matrix.Case("W1", cell, "pallas", dtype, target) for cell in model_lib.PALLAS
            for dtype in compile_matrix.DTYPES for target in TARGETS]
# Data parallel: the batch split over 8 GPUs / 4 TPU cores, one kernel per device (a TPU kernel call compiles only
# that way: Mosaic does not partition one).
W1_CASES += [compile_matrix.Case("W1", "lstm", "pallas", "float32", target) for target in ("h100x8", "v5e:2x2")]
W2_CASES = [compile_matrix.Case("W2", cell, "pallas", dtype, target) for cell in model_lib.PALLAS
            for dtype in compile_matrix.DTYPES for target in TARGETS]


def _outcomes(cases):
  return dict(compile_matrix.run_cases(cases, timeout=300))  # a case past 5 minutes fails as "timeout"


@pytest.fixture(scope="module")
def w1_outcomes():
  return _outcomes(W1_CASES)


@pytest.fixture(scope="module")
def w2_outcomes():
  return _outcomes(W2_CASES)


def _parameter_bytes(case) -> int:
  w = compile_matrix.WORKLOADS[case.workload]
  model = model_lib.LanguageModel(vocab_size=train_step.VOCAB, hidden_size=w.hidden, num_layers=w.num_layers,
                                  cell=case.cell)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def _check_compiled(case, outcome):
  assert outcome.status == "ok", (case, outcome)
  assert EXPECTED_KERNEL[case.target] in outcome.kernels, (case, outcome.kernels)
  # Per device: the replicated float32 parameters are among the arguments, and everything fits on the chip.
  assert outcome.arguments >= _parameter_bytes(case), (case, outcome)
  assert outcome.arguments <= outcome.total < 1 << 30, (case, outcome)
  assert outcome.seconds > 0


@needs_aot
@pytest.mark.parametrize("case", W1_CASES, ids=lambda c: f"{c.cell}-{c.dtype}-{c.target}")
def test_w1_train_step_compiles_and_fits(case, w1_outcomes):
  _check_compiled(case, w1_outcomes[case])


@needs_aot
@pytest.mark.slow
@pytest.mark.parametrize("case", W2_CASES, ids=lambda c: f"{c.cell}-{c.dtype}-{c.target}")
def test_w2_train_step_compiles_and_fits(case, w2_outcomes):
  _check_compiled(case, w2_outcomes[case])


def _command(*args, timeout=600):
  env = {**os.environ, "LSTM_JAX_OFFLINE": "1"}
  env.setdefault("LSTM_JAX_DATA_DIR", str(REPO.parent / "shared" / "data"))
  result = subprocess.run([sys.executable, "-m", "lstm_jax.commands.compile", "--config", CONFIG, *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
  assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
  return result


def _one_line(result) -> str:
  """The one line of a target (its indented estimate line, if any, left out)."""
  lines = [ln for ln in (result.stdout + result.stderr).strip().splitlines() if not ln.startswith("  estimated ")]
  assert len(lines) == 1, lines
  return lines[0]


@needs_aot
def test_the_command_estimates_every_candidate_from_the_compilers_dumps(real_data_dir):
  """The main job's model (1x256, batch 32 x 35) on an H100 and a v5e: every candidate's train step is compiled
  and its structure read from the dump (H100: grids, registers, loop launches; v5e: the kernels' step cycles)."""
  result = _command("--target", "h100", "--target", "v5e:1x1")
  assert result.returncode == 0, result.stdout + result.stderr
  h100, h100_estimates, v5e, v5e_estimates = result.stdout.strip().splitlines()
  for target, line in (("h100", h100_estimates), ("v5e", v5e_estimates)):
    assert line.startswith(f"  estimated train step on {target}, batch 32 x 35 (estimates, not measurements)"), line
    for recurrence in ("pallas", "fused_vjp", "scan"):
      assert f"{recurrence} ~" in line, line
    auto = line.rsplit("auto takes ", 1)[1].split()[0]
  for recurrence in ("pallas", "fused_vjp", "scan"):  # on a GPU every structure comes from the compiler
    assert f"{recurrence} ~" in h100_estimates.split(f"{recurrence} ~", 1)[0] + f"{recurrence} ~"
  assert h100_estimates.count("; compiler)") == 3, h100_estimates
  assert "-bound; compiler)" in v5e_estimates.split("pallas ~", 1)[1].split("|")[0], v5e_estimates
  # The line above each names the recurrence auto took there.
  assert f"recurrence {h100_estimates.rsplit('auto takes ', 1)[1].split()[0]};" in h100, h100
  assert f"recurrence {auto};" in v5e, v5e


@needs_aot
def test_the_command_prints_one_line_per_target_with_memory_and_kernels(real_data_dir):
  result = _command("--target", "v5e:1x1", "--config.model.hidden_size=32", "--config.model.recurrence=pallas",
                    "--population", "2", "--noestimate")
  assert result.returncode == 0, result.stdout + result.stderr
  assert result.stderr == ""  # libtpu's start-up warnings are not shown
  line = _one_line(result)
  assert line.startswith("v5e:1x1 (TPU v5") and ": ok;" in line
  for part in ("train ", "eval ", "population 2 ", "MiB arguments", "of 16.0 GiB", "recurrence pallas",
               "tpu_custom_call"):
    assert part in line, (part, line)


@needs_aot
def test_a_population_split_over_tpu_cores_runs_the_kernel_on_each(real_data_dir):
  """4 members over the 4 cores of a v5e:2x2: each core steps its member with the kernel (Mosaic compiles a kernel
  call over several devices only inside a shard_map)."""
  config = config_lib.experiment_config(CONFIG)
  config.model.hidden_size = 32
  config.model.recurrence = "pallas"  # auto takes fused_vjp on a v5e at this size (lstm_jax.estimates)
  target = targets_lib.resolve_all(["v5e:2x2"])[0]
  vocab = len(corpora.load(config.data).vocab)
  program = compile_lib.population_program(target, config, vocab, 4)  # placed on the target's 4 TPU cores
  assert program.error == "" and program.kernels.get("tpu_custom_call", 0) >= 2, program


@needs_aot
@pytest.mark.parametrize("args, expected", [
    (("--target", "h101"), "known targets: a100, h100, h200"),
    (("--target", "v9z:1x1"), "known targets"),
    (("--target", "h100", "--no_such_flag"), "no_such_flag"),
    (("--target", "h100", "--config.model.hiden=3"), "model.hidden_size"),
    (("--target", "h100", "--config.model.hidden_size=abc"), "hidden_size=abc"),
    (("--target", "h100", "--config", "no_such_config.py"), "No such file or directory: 'no_such_config.py'"),
    ((), "pass --target NAME"),
])
def test_bad_input_is_one_line_and_exit_2(args, expected, real_data_dir):
  result = _command(*args)
  assert result.returncode == 2
  line = _one_line(result)
  assert line.startswith("error:") and expected in line, line


@needs_aot
def test_a_program_that_does_not_fit_is_one_line_and_exit_1(real_data_dir):
  # hidden 40000: W_h alone is 40000 x 160000 float32 = 25.6 GB, more than a v5e's 16 GiB of HBM.
  result = _command("--target", "v5e:1x1", "--config.model.hidden_size=40000", "--config.model.recurrence=scan")
  assert result.returncode == 1
  line = _one_line(result)
  assert line.startswith("v5e:1x1 (TPU v5") and "FAILED (" in line and "HBM: needs" in line, line


@needs_aot
def test_pallas_outside_the_envelope_names_the_limit_on_each_chip_and_compiles_nothing(real_data_dir):
  result = _command("--target", "h100", "--target", "v5e:1x1", "--config.model.recurrence=pallas",
                    "--config.model.hidden_size=4096")
  assert result.returncode == 1
  h100, v5e = result.stdout.strip().splitlines()
  assert h100.startswith("h100 (") and "exceeds 2048" in h100 and "recurrence=auto" in h100, h100
  assert v5e.startswith("v5e:1x1 (") and "128 MiB, 2432" in v5e and "recurrence=auto" in v5e, v5e
  auto = _command("--target", "v5e:1x1", "--config.model.hidden_size=4096", "--config.model.recurrence=auto")
  assert "recurrence fused_vjp" in auto.stdout, auto.stdout  # auto steps outside the envelope onto XLA


@needs_aot
def test_cudnn_says_it_cannot_compile_without_a_gpu(real_data_dir):
  result = _command("--target", "h100", "--config.model.implementation=cudnn", "--config.model.recurrence=auto")
  assert result.returncode == 1
  assert "cuDNN's RNN cannot be compiled without a GPU" in _one_line(result)


def test_memory_beyond_the_chip_is_reported_as_not_fitting():
  memory = compile_lib.Memory(arguments=3 << 20, outputs=3 << 20, aliased=3 << 20, temporaries=2 << 20, code=0)
  result = compile_lib.TargetResult("tiny", "fake chip", 1, "pallas", memory_bytes=4 << 20,
                                    programs=[compile_lib.Program("train", 1.0, {"tpu_custom_call": 2}, memory)])
  assert memory.total == 5 << 20
  assert not result.ok
  assert result.problems() == ["train: does not fit: needs 5.0 MiB of 4.0 MiB per device"]
  assert "\n" not in result.line() and result.line().startswith("tiny (fake chip x1): FAILED (train: does not fit")
  assert compile_lib.TargetResult("big", "chip", 1, "pallas", 6 << 20, result.programs).ok


@pytest.mark.parametrize("message, short", [
    ("RESOURCE_EXHAUSTED: Allocation (size=268435456) would exceed memory (size=134217728) :: #allocation3 "
     "[shape = 'u8[268435456]{0}', space=vmem, size = 0x10000000, scoped, tag = 'input window']",
     "VMEM: needs 256.0 MiB of 128.0 MiB"),
    ("RESOURCE_EXHAUSTED: E1000: CompileTimeHbmOom: Ran out of memory on HBM, the total memory required for HLO "
     "temporaries (62.42G) exceeds available HBM (15.75G).\nHLO module: jit_train_step", "HBM: needs 62.42G of 15.75G"),
    ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space vmem. Used 128.38M of "
     "128.00M vmem. Exceeded vmem capacity by 388.0K.", "VMEM: needs 128.38M of 128.00M"),
    ("CompileTimeScopedVmemOom: Ran out of memory in memory space vmem while allocating on stack for %x.\nScoped "
     "allocation with size 38.52M and limit 16.00M exceeded scoped vmem limit by 22.52M.",
     "VMEM: needs 38.52M of 16.00M"),
])
def test_the_compilers_out_of_memory_messages_become_one_short_line(message, short):
  assert compile_lib.short_error(RuntimeError(message)) == short


def test_another_compiler_error_keeps_its_first_line():
  error = RuntimeError("INTERNAL: Mosaic failed to compile TPU kernel: unsupported shape\n\nat location ...\n" * 3)
  short = compile_lib.short_error(error)
  assert short == "RuntimeError: INTERNAL: Mosaic failed to compile TPU kernel: unsupported shape"


def test_missing_compiler_packages_name_the_install_command(monkeypatch):
  monkeypatch.setitem(targets_lib.PACKAGES, "tpu", {"libtpu-not-here": "no_such_module_for_lstm_jax"})
  with pytest.raises(targets_lib.MissingPackagesError, match=r"libtpu-not-here.*pip install -e '\.\[aot\]'"):
    targets_lib.resolve("v5e:1x1")


def test_target_names_are_checked_before_any_compile():
  assert targets_lib.family("h100") == targets_lib.family("h100x8") == "cuda"
  assert targets_lib.family("v5e:2x2") == targets_lib.family("v5p:1x1x1") == "tpu"
  for bad in ("h101", "h100x0", "tpu", "v5e"):
    with pytest.raises(targets_lib.UnknownTargetError, match="known targets: a100, h100, h200"):
      targets_lib.family(bad)


def test_every_chip_description_gives_its_memory():
  sizes = {chip: targets_lib.chip_memory_bytes((targets_lib.CHIPS_DIR / f"{chip}.textproto").read_text())
           for chip in targets_lib.gpu_chips()}
  assert set(sizes) >= {"h100", "h200", "a100"}
  assert sizes["a100"] == 80 << 30 and 79 << 30 < sizes["h100"] < 80 << 30 and sizes["h200"] > 140 << 30
