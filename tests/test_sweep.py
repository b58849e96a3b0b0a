"""Sweeps: every shipped sweep expands; a tiny sweep runs end to end, is skipped when finished, and aggregates."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

from lstm_jax.sweeps import aggregate
from lstm_jax.sweeps import launch as sweep

REPO = pathlib.Path(__file__).resolve().parents[1]


def _module(name):
  spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name", sorted(_module("lstm").SWEEPS))
@pytest.mark.parametrize("corpus", ["timemachine", "jaychou"])
def test_every_shipped_sweep_expands_into_distinct_runs(tmp_path, name, corpus):
  runs = sweep.expand(str(REPO / "experiments" / f"lstm.py:corpus={corpus}"), name, tmp_path)
  assert len(runs) >= 3 and len({r.workdir for r in runs}) == len(runs)
  for run in runs:
    assert any(arg.startswith("--config.") for arg in run.command)
  script = sweep.slurm_script(runs, tmp_path, sweep.Cluster(time="01:00:00", mem="8G", partition="gpu",
                                                             setup="source /opt/venv/bin/activate"))
  for line in ("--array=0-", "#SBATCH --time=01:00:00", "#SBATCH --mem=8G", "#SBATCH --partition=gpu",
               "source /opt/venv/bin/activate", f"#SBATCH --output={tmp_path.absolute()}/slurm-%A_%a.out"):
    assert line in script


def test_tpu_mode_keeps_bucket_workdirs_and_writes_the_runs_file_of_launch_tpu_vm(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  config = str(REPO / "experiments" / "lstm.py:corpus=timemachine")
  runs = sweep.expand(config, "hidden", "gs://bucket/sweeps")
  assert all(str(run.workdir).startswith("gs://bucket/sweeps/hidden/") for run in runs)  # never gs:/bucket
  assert all(not run.finished for run in runs)  # no gcsfs here: unknown counts as not finished
  sweep.launch(config, "hidden", "gs://bucket/sweeps", "tpu", tpu_name="v4", tpu_zone="zone-a")
  lines = (tmp_path / "runs" / "tpu" / "hidden.txt").read_text().splitlines()
  assert len(lines) == len(runs) and all("--workdir=gs://bucket/sweeps/hidden/" in line for line in lines)
  assert "TPU_NAME=v4 ZONE=zone-a BUCKET=gs://bucket/sweeps bash launch/tpu_vm.sh runs/tpu/hidden.txt" in (
      capsys.readouterr().out)
  assert not (tmp_path / "gs:").exists()
  with pytest.raises(ValueError, match="--root gs://BUCKET/PATH"):
    sweep.launch(config, "hidden", str(tmp_path / "local"), "tpu")


def test_unknown_sweep_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="Unknown sweep"):
    sweep.expand(str(REPO / "experiments" / "lstm.py"), "dropout", tmp_path)


def _tiny_experiment(tmp_path, config_lines, sweep_body):
  """Writes a tiny experiment file over a generated corpus: its ``get_config`` adds ``config_lines`` to a small
  raw-text setup, its ``sweep(add, name)`` runs ``sweep_body``. Returns the file's path."""
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("a cat sat on a mat and a rat sat on a hat. " * 30)
  experiment = tmp_path / "tiny.py"
  experiment.write_text(f'''
from lstm_jax import config as config_lib
def get_config():
  c = config_lib.default_config()
  c.data.corpus = {str(corpus)!r}; c.data.edition = "raw"; c.data.max_tokens = 600; c.data.num_val_tokens = 100
  c.data.batch_size = 4; c.data.num_steps = 8; c.model.hidden_size = 8
  c.train.num_epochs = 2; c.train.generate_every_epochs = 0
{config_lines}
  return c
def sweep(add, name):
{sweep_body}
''')
  return experiment


@pytest.mark.slow
def test_tiny_sweep_runs_skips_finished_and_aggregates(tmp_path):
  experiment = _tiny_experiment(
      tmp_path, "  c.optimizer.learning_rate = 1.0; c.optimizer.clip_norm = 1.0",
      '  for cell, lr in (("lstm", 0.5), ("rnn", 2.0)):\n    add(**{"model.cell": cell, "optimizer.learning_rate": lr})')
  command = [sys.executable, "-m", "lstm_jax.commands.sweep", f"--config={experiment}", "--sweep=lr", f"--root={tmp_path}/runs"]
  env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
  first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=True)
  assert "2 runs, 0 finished, 2 to run." in first.stdout
  again = subprocess.run(command + ["--dry_run"], cwd=REPO, env=env, capture_output=True, text=True, check=True)
  assert again.stdout.count("[done]") == 2
  rows, varying = aggregate.collect(tmp_path / "runs" / "lr")
  assert sorted(varying) == ["model.cell", "optimizer.learning_rate"] and len(rows) == 2
  table = aggregate.markdown_table(rows, varying)
  assert table.count("\n") == 4 and "| lstm | 0.5 |" in table
  aggregate.plot(rows, varying, tmp_path / "plot.png")
  assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_population_mode_trains_pending_points_together_and_aggregates(tmp_path):
  experiment = _tiny_experiment(
      tmp_path, "", '  for lr in (0.5, 1.0, 2.0):\n    add(**{"optimizer.learning_rate": lr, "optimizer.clip_norm": 1.0})')
  command = [sys.executable, "-m", "lstm_jax.commands.sweep", f"--config={experiment}", "--sweep=lr", f"--root={tmp_path}/runs",
             "--mode=population", "--set=train.num_epochs=3"]
  env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
  first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "3 runs, 0 finished, 3 to run." in first.stdout and "population 3" in first.stdout
  again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=True)
  assert "3 runs, 3 finished, 0 to run." in again.stdout
  rows, varying = aggregate.collect(tmp_path / "runs" / "lr")
  assert varying == ["optimizer.learning_rate"] and len(rows) == 3
  assert all(r["final.epoch"] == 3 for r in rows)  # the --set override reached every member
  assert len({r["final.train_perplexity"] for r in rows}) == 3


def test_gpu_mode_gives_each_run_one_gpu_without_preallocation(tmp_path):
  write_env = ("import os, sys; open(sys.argv[1], 'w').write(os.environ['CUDA_VISIBLE_DEVICES'] + ' ' + "
               "os.environ['XLA_PYTHON_CLIENT_PREALLOCATE']); sys.exit(sys.argv[1].endswith('2'))")
  runs = [sweep.SweepRun(f"run{i}", tmp_path, ("python", "-c", write_env, str(tmp_path / f"run{i}"))) for i in range(3)]
  failed = sweep.run_per_gpu(runs, ["3", "5"], poll_sec=0.05)
  assert failed == ["run2"]
  seen = [(tmp_path / f"run{i}").read_text().split() for i in range(3)]
  assert all(prealloc == "false" for _, prealloc in seen)
  assert {gpu for gpu, _ in seen} == {"3", "5"} and seen[0][0] != seen[1][0]


def test_generated_launch_scripts_pass_bash_syntax_check(tmp_path):
  runs = sweep.expand(str(REPO / "experiments" / "lstm.py:corpus=timemachine"), "hidden", tmp_path)
  for name, text in (("sweep.sbatch", sweep.slurm_script(runs, tmp_path)),
                     ("gpu_benchmark.sh", (REPO / "launch" / "gpu_benchmark.sh").read_text())):
    path = tmp_path / name
    path.write_text(text)
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, (name, result.stderr)


def test_local_mode_runs_every_point_and_names_the_failed_ones(tmp_path, monkeypatch):
  config = str(REPO / "experiments" / "lstm.py:corpus=timemachine")
  calls = []

  def fake_run(command, **kwargs):
    calls.append(command)
    return subprocess.CompletedProcess(command, 1 if "--config.model.hidden_size=128" in command else 0)

  monkeypatch.setattr(sweep.subprocess, "run", fake_run)
  with pytest.raises(SystemExit, match=r"Runs failed: hidden_size=128,cell=\w+, hidden_size=128,"):
    sweep.launch(config, "hidden", str(tmp_path), "local")
  assert len(calls) == len(sweep.expand(config, "hidden", tmp_path))  # the failures stopped nothing
