"""Expand an experiment's sweep into runs and launch them: print, run locally, one process per GPU, a SLURM array
script, or the command that starts every TPU-VM worker.

    python -m lstm_jax.sweep --config experiments/lstm.py:corpus=jaychou --sweep hidden --root runs/sweeps --dry_run

Each run gets its own workdir named after its overrides (``<root>/<sweep>/hidden_size=128``). Re-running a sweep
skips finished runs (a ``"final"`` record in ``metrics.jsonl``) and resumes interrupted ones from their latest
checkpoint (``lstm_jax.main`` resumes a workdir automatically).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import shlex
import subprocess
import sys

from absl import app, flags

_CONFIG = flags.DEFINE_string("config", None, "Experiment file with its variant, e.g. experiments/lstm.py:cell=gru.",
                              required=True)
_SWEEP = flags.DEFINE_string("sweep", None, "Name of the sweep in the experiment file.", required=True)
_ROOT = flags.DEFINE_string("root", "runs/sweeps", "Directory under which each run gets its workdir.")
_MODE = flags.DEFINE_enum("mode", "local", ["local", "gpus", "slurm", "tpu"], "How to launch the runs.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the runs' commands and exit.")
_EXTRA = flags.DEFINE_multi_string("set", [], "Extra overrides for every run, e.g. --set train.num_epochs=10.")
_TPU_NAME = flags.DEFINE_string("tpu_name", "my-tpu", "TPU VM name for --mode=tpu.")
_TPU_ZONE = flags.DEFINE_string("tpu_zone", "us-central2-b", "TPU VM zone for --mode=tpu.")


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  workdir: pathlib.Path
  command: tuple[str, ...]

  @property
  def finished(self) -> bool:
    metrics = self.workdir / "metrics.jsonl"
    return metrics.exists() and '"final": 1' in metrics.read_text()

  def shell(self) -> str:
    return shlex.join(self.command)


def load_sweep(config_spec: str, sweep_name: str) -> list[dict[str, object]]:
  """The override dicts of a sweep: ``experiment.sweep(add, name)`` collected."""
  path = config_spec.split(":", 1)[0]
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "sweep"):
    raise ValueError(f"{path} defines no sweep(add, name); pick an experiment file that does.")
  points: list[dict[str, object]] = []
  module.sweep(lambda **overrides: points.append(overrides), sweep_name)
  return points


def expand(config_spec: str, sweep_name: str, root: str | pathlib.Path, extra: tuple[str, ...] = ()) -> list[Run]:
  """One ``Run`` per sweep point, each with its workdir and ``python -m lstm_jax.main`` command."""
  runs = []
  for point in load_sweep(config_spec, sweep_name):
    name = ",".join(f"{key.split('.')[-1]}={value}" for key, value in point.items())
    workdir = pathlib.Path(root) / sweep_name / name
    overrides = [f"--config.{key}={value}" for key, value in point.items()] + [f"--config.{e}" for e in extra]
    command = ("python", "-m", "lstm_jax.main", f"--config={config_spec}", f"--workdir={workdir}", *overrides)
    runs.append(Run(name, workdir, command))
  return runs


def slurm_script(runs: list[Run], root: pathlib.Path) -> str:
  lines = ["#!/bin/bash", f"#SBATCH --array=0-{len(runs) - 1}", "#SBATCH --gres=gpu:1", "#SBATCH --cpus-per-task=4",
           f"#SBATCH --output={root}/slurm-%A_%a.out", "set -euo pipefail", "COMMANDS=("]
  lines += [f"  {shlex.quote(run.shell())}" for run in runs]
  lines += [")", 'eval "${COMMANDS[$SLURM_ARRAY_TASK_ID]}"']
  return "\n".join(lines) + "\n"


def tpu_command(runs: list[Run], name: str, zone: str) -> str:
  """Every worker of a TPU VM runs the same commands; LSTM_JAX_DISTRIBUTED=1 joins them into one JAX job."""
  body = " && ".join(f"LSTM_JAX_DISTRIBUTED=1 {run.shell()}" for run in runs)
  return (f"gcloud compute tpus tpu-vm ssh {name} --zone={zone} --worker=all "
          f"--command={shlex.quote('cd lstm_jax && ' + body)}")


def main(argv):
  del argv
  runs = expand(_CONFIG.value, _SWEEP.value, _ROOT.value, tuple(_EXTRA.value))
  root = pathlib.Path(_ROOT.value) / _SWEEP.value
  if _DRY_RUN.value:
    for run in runs:
      print(f"{'[done] ' if run.finished else ''}{run.shell()}")
    return
  pending = [run for run in runs if not run.finished]
  print(f"{len(runs)} runs, {len(runs) - len(pending)} finished, {len(pending)} to run.", flush=True)
  if _MODE.value == "local":
    for run in pending:
      print(f"== {run.name}", flush=True)
      subprocess.run((sys.executable,) + run.command[1:], check=True)
  elif _MODE.value == "gpus":
    import jax  # noqa: PLC0415
    num_gpus = len(jax.devices("gpu"))
    for start in range(0, len(pending), num_gpus):
      processes = [subprocess.Popen((sys.executable,) + run.command[1:], env={**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu),
                                                      "XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
                   for gpu, run in enumerate(pending[start:start + num_gpus])]
      if any(p.wait() for p in processes):
        raise SystemExit("A run failed; rerun the sweep to resume it.")
  elif _MODE.value == "slurm":
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.sbatch").write_text(slurm_script(pending, root))
    print(f"Wrote {root / 'sweep.sbatch'}; submit it with: sbatch {root / 'sweep.sbatch'}")
  else:
    print(tpu_command(pending, _TPU_NAME.value, _TPU_ZONE.value))


if __name__ == "__main__":
  app.run(main)
