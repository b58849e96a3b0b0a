"""Expand an experiment's sweep into runs and launch them: print, run locally, one process per GPU, a SLURM array
script, or the runs file that ``launch/tpu_vm.sh`` starts on every TPU-VM worker.

    python -m lstm_jax.commands.sweep --config experiments/lstm.py:corpus=jaychou --sweep hidden --root runs/sweeps --dry_run

Each run gets its own workdir named after its overrides (``<root>/<sweep>/hidden_size=128``). Re-running a sweep
skips finished runs (a ``"final"`` record in ``metrics.jsonl``) and resumes interrupted ones from their latest
checkpoint (``lstm_jax.main`` resumes a workdir automatically).

The SLURM script is ``launch/slurm_array.sbatch`` filled in (``render_slurm``); for a runs file of your own (one
command per line): ``python -m lstm_jax.commands.sweep --mode slurm --runs_file runs.txt --slurm_time=04:00:00
--slurm_gpus=1 > job.sbatch``. ``--mode tpu`` (workdirs under ``--root gs://...``) writes ``runs/tpu/<sweep>.txt``
and prints the ``launch/tpu_vm.sh`` command that runs it.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

from etils import epath

from lstm_jax import config as config_lib
from lstm_jax.train import progress as progress_lib
from lstm_jax.train import workdir as workdir_lib

@dataclasses.dataclass(frozen=True)
class SweepRun:
  """One point of a sweep: its name (its overrides), its workdir and the ``python -m lstm_jax.main`` command that
  trains it there."""
  name: str
  workdir: epath.Path   # a local folder or a URI (gs://...)
  command: tuple[str, ...]

  @property
  def finished(self) -> bool:
    """Whether the run has finished; False where its URI's filesystem package is missing here (gcsfs, ...)."""
    try:
      return workdir_lib.is_finished(self.workdir)
    except ImportError:
      return False

  def shell(self) -> str:
    return shlex.join(self.command)


def load_sweep(config_spec: str, sweep_name: str) -> list[dict[str, object]]:
  """The override dicts of a sweep: ``experiment.sweep(add, name)`` collected."""
  path = config_spec.split(":", 1)[0]
  module = config_lib.load_experiment(path)
  if not hasattr(module, "sweep"):
    raise ValueError(f"{path} defines no sweep(add, name); pick an experiment file that does.")
  points: list[dict[str, object]] = []
  module.sweep(lambda **overrides: points.append(overrides), sweep_name)
  return points


def expand(config_spec: str, sweep_name: str, root: str | pathlib.Path, extra: tuple[str, ...] = ()) -> list[SweepRun]:
  """One ``SweepRun`` per sweep point, each with its workdir and ``python -m lstm_jax.main`` command."""
  runs = []
  for point in load_sweep(config_spec, sweep_name):
    name = ",".join(f"{key.split('.')[-1]}={value}" for key, value in point.items())
    workdir = workdir_lib.path(root) / sweep_name / name  # epath: a gs:// root stays a URI
    overrides = [f"--config.{key}={value}" for key, value in point.items()] + [f"--config.{e}" for e in extra]
    command = ("python", "-m", "lstm_jax.main", f"--config={config_spec}", f"--workdir={workdir}", *overrides)
    runs.append(SweepRun(name, workdir, command))
  return runs


def _parse_like(current, text: str):
  if isinstance(current, bool):
    return text.lower() in ("1", "true", "yes")
  if isinstance(current, (int, float)):
    return type(current)(text)
  if isinstance(current, tuple):
    return tuple(t.strip() for t in text.strip("()[]").split(",") if t.strip())
  return text


def run_config(config_spec: str, point: dict[str, object], extra: tuple[str, ...] = ()):
  """The locked ConfigDict of one run: the experiment's variant, then the sweep point, then ``extra`` overrides."""
  config = config_lib.experiment_config(config_spec)
  config.lock()
  for key, value in point.items():
    _set(config, key, value)
  for assignment in extra:
    key, _, text = assignment.partition("=")
    _set(config, key, _parse_like(_get(config, key), text))
  return config


def _get(config, key: str):
  for part in key.split("."):
    config = config[part]
  return config


def _set(config, key: str, value) -> None:
  *parents, leaf = key.split(".")
  try:
    target = _get(config, ".".join(parents)) if parents else config
    target[leaf] = value
  except (KeyError, AttributeError) as e:
    raise ValueError(f"Sweep override {key}={value!r} names no config field ({e}); fields are listed in "
                     f"lstm_jax/config.py.") from e


def local_gpus() -> list[str]:
  """The GPU ids to use: ``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi -L`` (without starting JAX here, which
  would reserve memory on every GPU)."""
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  if visible:
    return [g.strip() for g in visible.split(",") if g.strip()]
  try:
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError) as e:
    raise SystemExit(f"--mode gpus found no GPU ({e}); use --mode local or set CUDA_VISIBLE_DEVICES.") from e
  return [str(i) for i, line in enumerate(l for l in listing.splitlines() if l.startswith("GPU"))]


def run_per_gpu(runs: list[SweepRun], gpus: list[str], poll_sec: float = 1.0) -> list[str]:
  """One process per GPU, each seeing only its GPU; a GPU takes the next run as soon as it is free. Returns the
  names of the runs that failed."""
  queue, busy, failed = list(runs), {}, []
  while queue or busy:
    for gpu in gpus:
      if gpu in busy or not queue:
        continue
      run = queue.pop(0)
      print(f"== {run.name} on GPU {gpu}", flush=True)
      env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
      busy[gpu] = (run, subprocess.Popen((sys.executable,) + run.command[1:], env=env))
    for gpu, (run, process) in list(busy.items()):
      if process.poll() is not None:
        del busy[gpu]
        if process.returncode:
          failed.append(run.name)
    time.sleep(poll_sec if busy else 0)
  return failed


@dataclasses.dataclass(frozen=True)
class Cluster:
  """Where batch runs go: SLURM resources and the shell line that makes the project importable on a node."""
  time: str = "04:00:00"        # SLURM --time per run
  mem: str = "16G"              # SLURM --mem per run
  partition: str = ""           # SLURM --partition ("": the cluster's default)
  cpus: int = 4                 # SLURM --cpus-per-task
  gpus: int = 1                 # SLURM --gres=gpu:N per run (0: none)
  setup: str = ""               # e.g. "source ~/lstm_jax/.venv/bin/activate" ("": the venv running this command)


def _default_setup() -> str:
  """Activation of the environment this command runs in (a venv's activate script when there is one)."""
  activate = pathlib.Path(sys.prefix) / "bin" / "activate"
  return f"source {shlex.quote(str(activate))}" if activate.exists() else ""


SLURM_TEMPLATE = pathlib.Path(__file__).parent / "templates" / "slurm_array.sbatch"  # launch/ links to it
_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def render(template: str, values: dict[str, object]) -> str:
  """Fills the ``@NAME@`` placeholders of a ``launch/`` template with ``values`` (inserted as given: quote shell
  words yourself). An ``#SBATCH`` line whose value is empty is left out, so the cluster's default applies. A
  placeholder without a value, or a value that no placeholder uses, is an error."""
  names = set(_PLACEHOLDER.findall(template))
  if missing := sorted(names - set(values)):
    raise ValueError(f"No value for the template's placeholders {missing}.")
  if unused := sorted(set(values) - names):
    raise ValueError(f"The template has no placeholders {unused}.")
  lines = []
  for line in template.splitlines(keepends=True):
    found = _PLACEHOLDER.findall(line)
    if line.startswith("#SBATCH") and found:
      if any(str(values[name]) == "" for name in found):
        continue
      if any("\n" in str(values[name]) for name in found):
        raise ValueError(f"An #SBATCH value has a line break: {[values[name] for name in found]}.")
    lines.append(_PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), line))
  return "".join(lines)


def count_run_lines(text: str) -> int:
  """The runs in a runs file: its lines that are neither blank nor comments (the launch/ scripts' rule)."""
  return sum(1 for line in text.splitlines() if line.split() and not line.split()[0].startswith("#"))


def runs_file(runs: list[SweepRun]) -> str:
  """A runs file: one shell command per line, as the launch/ scripts read it."""
  return "".join(run.shell() + "\n" for run in runs)


def slurm_for_runs_file(runs_path: str | pathlib.Path, cluster: Cluster = Cluster(), job_name: str = "lstm_jax") -> str:
  """The SLURM array script of a runs file of your own (one command per line, blank and ``#`` lines skipped)."""
  return render_slurm(runs_path, count_run_lines(pathlib.Path(runs_path).read_text()), cluster, job_name=job_name)


def render_slurm(runs_path: str | pathlib.Path, num_runs: int, cluster: Cluster = Cluster(),
                 job_name: str = "lstm_jax", output: str | None = None, chdir: str | pathlib.Path | None = None,
                 template: str | pathlib.Path = SLURM_TEMPLATE) -> str:
  """``launch/slurm_array.sbatch`` filled in: an array of ``num_runs`` tasks, task i running the i-th run of the
  runs file ``runs_path`` in ``chdir`` (default: here) after ``cluster.setup`` (default: this environment's
  activation). Logs go to ``output`` (default: ``slurm-%A_%a.out`` beside the runs file)."""
  if num_runs < 1:
    raise ValueError("A SLURM array needs at least one run.")
  runs_path = pathlib.Path(runs_path).absolute()
  values = {
      "JOB_NAME": job_name, "ARRAY": f"0-{num_runs - 1}", "TIME": cluster.time, "MEM": cluster.mem,
      "CPUS": cluster.cpus or "", "GPUS": cluster.gpus or "", "PARTITION": cluster.partition,
      "OUTPUT": output or f"{runs_path.parent}/slurm-%A_%a.out",
      "CHDIR": shlex.quote(str(pathlib.Path(chdir or pathlib.Path.cwd()).absolute())),
      "SETUP": cluster.setup or _default_setup(), "RUNS_FILE": shlex.quote(str(runs_path)),
  }
  template = pathlib.Path(template)
  text = render(template.read_text(), values)
  shebang, _, rest = text.partition("\n")
  return f"{shebang}\n# Rendered from launch/{template.name} by lstm_jax.sweeps.launch.render_slurm.\n{rest}"


def slurm_script(runs: list[SweepRun], root: pathlib.Path, cluster: Cluster = Cluster()) -> str:
  """A SLURM array job, one run per task, with absolute paths (sbatch may start it from any directory): the
  template ``launch/slurm_array.sbatch`` reading ``<root>/runs.txt`` (which ``runs_file(runs)`` gives)."""
  root = pathlib.Path(root).absolute()
  return render_slurm(root / "runs.txt", len(runs), cluster, job_name=f"lstm_jax-{root.name}",
                      output=f"{root}/slurm-%A_%a.out")


def tpu_runs_file(sweep_name: str) -> pathlib.Path:
  """Where ``--mode tpu`` writes the runs file that ``launch/tpu_vm.sh`` reads (here: the workdirs are remote)."""
  return pathlib.Path("runs") / "tpu" / f"{sweep_name}.txt"


MODES = ("local", "gpus", "slurm", "tpu", "population")


def _failed(names: list[str]) -> None:
  if names:
    raise SystemExit(f"Runs failed: {', '.join(names)}; rerun the sweep to resume them.")


def _launch_local(pending: list[SweepRun]) -> None:
  """One run after another in this terminal; a failed run does not stop the others."""
  progress, failed = progress_lib.Progress(len(pending)), []
  for index, run in enumerate(pending, start=1):
    print(f"== [{index}/{len(pending)}] {run.name}  {progress.timing()}", flush=True)
    if subprocess.run((sys.executable,) + run.command[1:]).returncode:
      failed.append(run.name)
    progress.advance()
  _failed(failed)


def _launch_gpus(pending: list[SweepRun]) -> None:
  _failed(run_per_gpu(pending, local_gpus()))


def _launch_population(pending: list[SweepRun], runs: list[SweepRun], config_spec: str, sweep_name: str,
                       extra: tuple[str, ...]) -> None:
  """The pending runs as one population: one program that trains them side by side."""
  from lstm_jax.sweeps import population  # noqa: PLC0415 (JAX is only needed in this mode)
  if pending:
    points = {run.name: point for run, point in zip(runs, load_sweep(config_spec, sweep_name))}
    configs = [run_config(config_spec, points[run.name], extra) for run in pending]
    population.train_population(configs, [run.workdir for run in pending])


def _launch_slurm(pending: list[SweepRun], sweep_root: pathlib.Path, cluster: Cluster) -> None:
  """Writes the runs file and the SLURM array script beside it, and says how to submit it."""
  if not pending:
    print("Every run has finished; nothing to submit.")
    return
  sweep_root.mkdir(parents=True, exist_ok=True)
  (sweep_root / "runs.txt").write_text(runs_file(pending))
  (sweep_root / "sweep.sbatch").write_text(slurm_script(pending, sweep_root, cluster))
  print(f"Wrote {sweep_root / 'sweep.sbatch'} (one task per line of {sweep_root / 'runs.txt'}); submit it with: "
        f"sbatch {sweep_root / 'sweep.sbatch'}")


def _launch_tpu(pending: list[SweepRun], sweep_name: str, root: str, tpu_name: str, tpu_zone: str) -> None:
  """Writes the runs file ``launch/tpu_vm.sh`` starts on every worker, and prints that command."""
  runs_path = tpu_runs_file(sweep_name)
  runs_path.parent.mkdir(parents=True, exist_ok=True)
  runs_path.write_text(runs_file(pending))
  print(f"Wrote {runs_path} ({len(pending)} runs); start them on every worker with:\n"
        f"TPU_NAME={tpu_name} ZONE={tpu_zone} BUCKET={root} bash launch/tpu_vm.sh {runs_path}")


def launch(config_spec: str, sweep_name: str, root: str, mode: str, extra: tuple[str, ...] = (),
           dry_run: bool = False, tpu_name: str = "my-tpu", tpu_zone: str = "us-central2-b",
           cluster: Cluster = Cluster()) -> None:
  """Expands the sweep and runs (or writes the script for) every run that has not finished."""
  if mode == "slurm":  # the script runs elsewhere: absolute paths for the config and the workdirs
    path, sep, variant = config_spec.partition(":")
    config_spec = str(pathlib.Path(path).absolute()) + sep + variant
    root = str(pathlib.Path(root).absolute())
  if mode == "tpu" and not workdir_lib.is_uri(root):  # runs start in a copy of this checkout on every worker
    raise ValueError(f"--mode tpu needs the workdirs on a bucket every TPU worker reaches: pass --root "
                     f"gs://BUCKET/PATH, not {root!r}.")
  runs = expand(config_spec, sweep_name, root, extra)
  if dry_run:
    for run in runs:
      print(f"{'[done] ' if run.finished else ''}{run.shell()}")
    return
  pending = [run for run in runs if not run.finished]
  print(f"{len(runs)} runs, {len(runs) - len(pending)} finished, {len(pending)} to run.", flush=True)
  if mode == "local":
    _launch_local(pending)
  elif mode == "gpus":
    _launch_gpus(pending)
  elif mode == "population":
    _launch_population(pending, runs, config_spec, sweep_name, extra)
  elif mode == "slurm":
    _launch_slurm(pending, pathlib.Path(root) / sweep_name, cluster)
  elif mode == "tpu":
    _launch_tpu(pending, sweep_name, root, tpu_name, tpu_zone)
  else:
    raise ValueError(f"Unknown mode {mode!r}; choose one of {MODES}.")
