"""The package as a user gets it from a plain ``pip install .`` (a built wheel, not this checkout): its console
commands run from another directory, and the main job's workdir holds TensorBoard events (read back with
TensorBoard's event reader: tags and number of points), ``metrics.jsonl`` and ``perplexity.png``."""

import importlib.metadata
import os
import pathlib
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing import event_accumulator

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
EPOCHS = 2


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """``pip install .`` into a directory of its own (no dependencies: they are this environment's)."""
  target = tmp_path_factory.mktemp("site")
  command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(REPO)]
  if _setuptools_major() >= 77:  # build offline with this environment's setuptools (77: SPDX license metadata)
    command.insert(4, "--no-build-isolation")
  subprocess.run(command, check=True, timeout=600, capture_output=True)
  return target


def _setuptools_major() -> int:
  try:
    return int(importlib.metadata.version("setuptools").split(".")[0])
  except importlib.metadata.PackageNotFoundError:
    return 0


def _run(installed, elsewhere, real_data_dir, *command):
  env = {**os.environ, "PYTHONPATH": str(installed), "LSTM_JAX_DATA_DIR": real_data_dir, "LSTM_JAX_OFFLINE": "1"}
  return subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)


def test_the_installed_package_trains_evaluates_and_generates_from_any_directory(installed, tmp_path, real_data_dir):
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  version = _run(installed, elsewhere, real_data_dir, sys.executable, "-c",
                 "import lstm_jax; print(lstm_jax.__version__, lstm_jax.__file__)")
  assert version.returncode == 0, version.stderr
  number, location = version.stdout.split()
  assert location.startswith(str(installed)) and number == lstm_jax_version()

  workdir = tmp_path / "run"
  train = _run(installed, elsewhere, real_data_dir, str(installed / "bin" / "lstm-jax-train"),
               "--config", str(REPO / "experiments" / "timemachine_lstm.py"), "--workdir", str(workdir),
               f"--config.train.num_epochs={EPOCHS}")
  assert train.returncode == 0, train.stderr[-3000:]
  assert f"epoch    {EPOCHS}/{EPOCHS}" in train.stdout and "ETA" in train.stdout
  assert "final training perplexity" in train.stdout
  assert (workdir / "metrics.jsonl").is_file()
  assert (workdir / "perplexity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  accumulator = event_accumulator.EventAccumulator(str(workdir / "tensorboard"))
  accumulator.Reload()
  scalars = accumulator.Tags()["scalars"]
  assert {"train/loss", "train/perplexity", "train/bpc", "perf/tokens_per_sec", "progress/epoch"} <= set(scalars)
  assert [event.step for event in accumulator.Scalars("train/perplexity")] == [8 * e for e in range(1, EPOCHS + 1)]

  evaluate = _run(installed, elsewhere, real_data_dir, str(installed / "bin" / "lstm-jax-evaluate"),
                  "--workdir", str(workdir))
  assert evaluate.returncode == 0 and "perplexity" in evaluate.stdout, evaluate.stderr[-2000:]
  generate = _run(installed, elsewhere, real_data_dir, str(installed / "bin" / "lstm-jax-generate"),
                  "--workdir", str(workdir), "--prefix", "time", "--num_tokens", "5")
  assert generate.returncode == 0 and generate.stdout.startswith("time"), generate.stderr[-2000:]


def test_the_wheel_ships_the_files_the_package_reads(installed):
  for name in ("py.typed", "d2l/book_tables.md", "sweeps/templates/slurm_array.sbatch"):
    assert (installed / "lstm_jax" / name).is_file(), name


def lstm_jax_version() -> str:
  import lstm_jax  # noqa: PLC0415 (this checkout's)
  return lstm_jax.__version__
