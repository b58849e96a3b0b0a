"""Multi-host training for real on one machine: two JAX processes joined through a coordinator on 127.0.0.1 (CPU
collectives through gloo, one CPU device each) train the main job with ``LSTM_JAX_DISTRIBUTED=1``.

They must end with the parameters of one process that has the same two devices, write the run's files once from
process 0, and resume after both are killed as if never stopped. Loopback only; each job is bounded by a timeout.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lstm_jax.train import checkpoint
from lstm_jax.train import multihost
from lstm_jax.train import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
EPOCHS = 3
STEPS_PER_EPOCH = 8  # 10,000 characters / (batch 32 x 35 steps)
TIMEOUT_S = 240


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _command(workdir, *overrides) -> list[str]:
  return [sys.executable, "-m", "lstm_jax.main", "--config", str(REPO / "experiments" / "timemachine_lstm.py"),
          "--workdir", str(workdir), f"--config.train.num_epochs={EPOCHS}", "--config.train.generate_every_epochs=0",
          *overrides]


def _env(real_data_dir, **extra) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("LSTM_JAX_", "XLA_FLAGS"))}
  return {**env, "JAX_PLATFORMS": "cpu", "LSTM_JAX_DATA_DIR": real_data_dir, "LSTM_JAX_OFFLINE": "1", **extra}


def _start_job(workdir, real_data_dir, *overrides) -> list[subprocess.Popen]:
  """Two processes of one JAX job, process 0 hosting the coordinator."""
  port = _free_port()
  return [subprocess.Popen(_command(workdir, *overrides), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=_env(real_data_dir, LSTM_JAX_DISTRIBUTED="1", LSTM_JAX_COORDINATOR=f"127.0.0.1:{port}",
                                    LSTM_JAX_NUM_PROCESSES="2", LSTM_JAX_PROCESS_ID=str(index)))
          for index in range(2)]


def _finish(processes) -> list[str]:
  outputs = []
  for process in processes:
    try:
      outputs.append(process.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
      for p in processes:
        p.kill()
      pytest.fail(f"a process of the two-process job ran past {TIMEOUT_S} s")
  for index, (process, output) in enumerate(zip(processes, outputs)):
    assert process.returncode == 0, f"process {index} exited {process.returncode}:\n{output[-3000:]}"
  return outputs


def _params(workdir):
  _, params, _, _ = checkpoint.load_params(workdir)
  return params


def _assert_same_params(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def _checkpoint_steps(workdir) -> list[int]:
  folder = workdir_lib.checkpoint_dir(workdir)
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []


def test_the_job_is_named_by_environment_variables_or_detected():
  environ = {"LSTM_JAX_COORDINATOR": "10.0.0.1:1234", "LSTM_JAX_NUM_PROCESSES": "4", "LSTM_JAX_PROCESS_ID": "3"}
  assert multihost.distributed_args(environ) == dict(coordinator_address="10.0.0.1:1234", num_processes=4,
                                                     process_id=3)
  assert multihost.distributed_args({}) == {}  # TPU VM, SLURM: JAX finds the coordinator
  for bad, message in (({**environ, "LSTM_JAX_PROCESS_ID": ""}, "set all of"),
                       ({**environ, "LSTM_JAX_NUM_PROCESSES": "four"}, "not an integer"),
                       ({**environ, "LSTM_JAX_PROCESS_ID": "4"}, "outside 0..3")):
    with pytest.raises(ValueError, match=message):
      multihost.distributed_args(bad)


def test_a_half_named_job_is_one_clear_line_and_exit_1(tmp_path):
  env = {**os.environ, "LSTM_JAX_DISTRIBUTED": "1", "LSTM_JAX_COORDINATOR": "127.0.0.1:1", "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(_command(tmp_path / "run"), capture_output=True, text=True, timeout=120, env=env)
  assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("error: set all of")
  assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, real_data_dir):
  workdir = tmp_path_factory.mktemp("multihost") / "run"
  outputs = _finish(_start_job(workdir, real_data_dir))
  return workdir, outputs


@pytest.mark.slow
def test_two_processes_end_with_the_parameters_of_one_process_on_two_devices(two_process_run, tmp_path,
                                                                             real_data_dir):
  workdir, _ = two_process_run
  single = tmp_path / "single"
  result = subprocess.run(_command(single), capture_output=True, text=True, timeout=TIMEOUT_S,
                          env=_env(real_data_dir, XLA_FLAGS="--xla_force_host_platform_device_count=2"))
  assert result.returncode == 0, result.stderr[-3000:]
  _assert_same_params(_params(workdir), _params(single))


@pytest.mark.slow
def test_only_process_0_reports_and_writes_the_run_files(two_process_run):
  workdir, (first, second) = two_process_run
  assert "epoch    3/3" in first and "final training perplexity" in first
  assert "epoch" not in second and "final training perplexity" not in second, second[-2000:]
  records = [json.loads(line) for line in (workdir / workdir_lib.METRICS_FILE).read_text().splitlines()]
  assert [r["epoch"] for r in records if "final" not in r] == list(range(1, EPOCHS + 1))  # one writer: no duplicates
  assert sum("final" in r for r in records) == 1
  assert json.loads((workdir / workdir_lib.CONFIG_FILE).read_text())["config"]["train"]["num_epochs"] == EPOCHS
  assert len(list((workdir / "tensorboard").glob("events.out.tfevents.*"))) == 1
  assert _checkpoint_steps(workdir)[-1] == EPOCHS * STEPS_PER_EPOCH
  assert not list(workdir.glob(".write_test*"))


@pytest.mark.slow
def test_both_processes_killed_then_rerun_resume_as_if_never_stopped(two_process_run, tmp_path, real_data_dir):
  workdir, _ = two_process_run
  killed = tmp_path / "killed"
  processes = _start_job(killed, real_data_dir, "--config.train.checkpoint_every_steps=2")
  deadline = time.monotonic() + TIMEOUT_S
  while not _checkpoint_steps(killed) and time.monotonic() < deadline and all(p.poll() is None for p in processes):
    time.sleep(0.02)
  for process in processes:
    process.send_signal(signal.SIGKILL)
    process.wait()
  steps = _checkpoint_steps(killed)
  assert steps and steps[-1] < EPOCHS * STEPS_PER_EPOCH, f"killed after the end (steps {steps}): nothing to resume"
  first, second = _finish(_start_job(killed, real_data_dir, "--config.train.checkpoint_every_steps=2"))
  assert f"Resumed from checkpoint step {steps[-1]}" in first and "Resumed" not in second
  _assert_same_params(_params(killed), _params(workdir))
  assert _epoch_losses(killed) == _epoch_losses(workdir)  # the log reads as if never stopped


def _epoch_losses(workdir) -> list[float]:
  return [r["train_loss"] for r in workdir_lib.read_metrics(workdir) if "final" not in r]
