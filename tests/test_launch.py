"""launch/: every script passes `bash -n` (and shellcheck where installed), the SLURM template renders with every
placeholder filled, and the runners run for real on this machine with stand-ins for the GPUs, SLURM and gcloud."""

import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys

import pytest

from lstm_jax.sweeps import launch as sweep

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SCRIPTS = sorted(p.name for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))
CLUSTER = sweep.Cluster(time="01:30:00", mem="12G", partition="gpu-long", cpus=6, gpus=2,
                        setup="source /opt/venv/bin/activate")


def _bash(*args, env=None, cwd=None, timeout=60):
  return subprocess.run(["bash", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def _executable(path: pathlib.Path, text: str) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)
  return path


def _rendered(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
  """The script as it runs: a template rendered (with runs file and resources), the others as they are."""
  if name.endswith(".sbatch"):
    runs = tmp_path / "runs.txt"
    runs.write_text("echo one\necho two\n")
    out = tmp_path / name
    out.write_text(sweep.render_slurm(runs, 2, CLUSTER, template=LAUNCH / name))
    return out
  return LAUNCH / name


def test_launch_has_the_scripts():
  assert {"slurm_array.sbatch", "tpu_vm.sh", "multihost.sh", "local_gpus.sh", "gpu_benchmark.sh"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_passes_bash_syntax_check(tmp_path, name):
  for path in {LAUNCH / name, _rendered(name, tmp_path)}:
    result = _bash("-n", path)
    assert result.returncode == 0, (path, result.stderr)


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_passes_shellcheck(tmp_path, name):
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed")
  result = subprocess.run(["shellcheck", "--shell=bash", "--exclude=SC1091", str(_rendered(name, tmp_path))],
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_is_strict_and_documented(name):
  text = (LAUNCH / name).read_text()
  assert "set -euo pipefail" in text
  header = text.split("set -euo pipefail")[0]
  assert "bash launch/" in header or "sbatch" in header  # usage in the header comment


def test_slurm_template_renders_every_placeholder_and_the_resources(tmp_path):
  text = _rendered("slurm_array.sbatch", tmp_path).read_text()
  assert not re.search(r"@[A-Z_]+@", text)
  for line in ("#SBATCH --time=01:30:00", "#SBATCH --mem=12G", "#SBATCH --cpus-per-task=6", "#SBATCH --gres=gpu:2",
               "#SBATCH --partition=gpu-long", "#SBATCH --array=0-1", f"#SBATCH --output={tmp_path}/slurm-%A_%a.out",
               "source /opt/venv/bin/activate", f"RUNS_FILE={tmp_path}/runs.txt", f"cd {pathlib.Path.cwd()}"):
    assert line in text.splitlines(), line
  # The #SBATCH lines come before the first command (sbatch stops reading them there).
  lines = text.splitlines()
  first_command = next(i for i, l in enumerate(lines) if l and not l.startswith("#"))
  assert max(i for i, l in enumerate(lines) if l.startswith("#SBATCH")) < first_command


def test_slurm_empty_values_leave_the_line_out(tmp_path):
  text = sweep.render_slurm(tmp_path / "runs.txt", 3, sweep.Cluster(partition="", gpus=0))
  sbatch = [line for line in text.splitlines() if line.startswith("#SBATCH")]
  assert not any("--partition" in line or "--gres" in line for line in sbatch) and "#SBATCH --array=0-2" in sbatch
  assert "GPUS=" in text.splitlines()  # and the task asks for no GPU
  with pytest.raises(ValueError, match="at least one run"):
    sweep.render_slurm(tmp_path / "runs.txt", 0)
  with pytest.raises(ValueError, match="No value"):
    sweep.render("#SBATCH --time=@TIME@\n@SETUP@\n", {"TIME": "1:00"})
  with pytest.raises(ValueError, match="no placeholders"):
    sweep.render("@SETUP@\n", {"SETUP": "", "TIME": "1:00"})


def test_sweep_slurm_mode_writes_the_template_and_its_runs_file(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(REPO)
  sweep.launch("experiments/lstm.py:corpus=timemachine", "hidden", str(tmp_path), "slurm",
               cluster=sweep.Cluster(time="02:00:00", partition="p", setup="true"))
  root = tmp_path / "hidden"
  runs = (root / "runs.txt").read_text().splitlines()
  script = (root / "sweep.sbatch").read_text()
  assert len(runs) == len(sweep.expand("experiments/lstm.py:corpus=timemachine", "hidden", tmp_path)) >= 3
  assert all(f"--config={REPO}/experiments/lstm.py:corpus=timemachine" in run for run in runs)
  assert all(f"--workdir={root}/" in run for run in runs)
  assert f"#SBATCH --array=0-{len(runs) - 1}" in script and "Rendered from launch/slurm_array.sbatch" in script
  assert f"RUNS_FILE={root}/runs.txt" in script and "sbatch " in capsys.readouterr().out


def test_slurm_task_runs_its_line_after_printing_the_devices(tmp_path):
  """The rendered script run as SLURM would, with a stand-in `python` that prints devices."""
  bin_dir = tmp_path / "bin"
  _executable(bin_dir / "python", '#!/bin/bash\necho "[FakeDevice(id=0)]"\n')
  runs = tmp_path / "runs.txt"
  runs.write_text("# a comment\necho run zero\n\n  echo run one > \"$OUT_FILE\"\n")
  script = tmp_path / "job.sbatch"
  script.write_text(sweep.render_slurm(runs, sweep.count_run_lines(runs.read_text()),
                                       sweep.Cluster(gpus=0, setup=f"export PATH={bin_dir}:$PATH"), chdir=tmp_path))
  env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "OUT_FILE": str(tmp_path / "out")}
  result = _bash(script, env=env)
  assert result.returncode == 0, result.stderr
  assert result.stdout.index("== task 1") < result.stdout.index("[FakeDevice(id=0)]")  # devices before the run
  assert (tmp_path / "out").read_text() == "run one\n"
  missing = _bash(script, env={**env, "SLURM_ARRAY_TASK_ID": "2"})
  assert missing.returncode == 2 and "has no run 2 (it has 2 runs)" in missing.stderr


def test_slurm_cli_renders_a_runs_file_of_your_own(tmp_path):
  runs = tmp_path / "runs.txt"
  runs.write_text("echo a\n# not a run\necho b\necho c\n")
  result = subprocess.run([sys.executable, "-m", "lstm_jax.commands.sweep", "--mode=slurm", f"--runs_file={runs}",
                           "--slurm_time=00:10:00", "--slurm_mem=1G", "--slurm_cpus=2", "--slurm_gpus=1",
                           "--slurm_partition=debug", "--setup=true"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
  assert result.returncode == 0, result.stderr
  for line in ("#SBATCH --array=0-2", "#SBATCH --time=00:10:00", "#SBATCH --mem=1G", "#SBATCH --cpus-per-task=2",
               "#SBATCH --gres=gpu:1", "#SBATCH --partition=debug"):
    assert line in result.stdout.splitlines()
  assert not re.search(r"@[A-Z_]+@", result.stdout)


def _local_gpus(tmp_path, *args, **env):
  env = {**os.environ, "NUM_GPUS": "2", "POLL_SEC": "0.05", "LOG_DIR": str(tmp_path / "logs"), **env}
  env.pop("CUDA_VISIBLE_DEVICES", None)
  if not (tmp_path / "bin" / "nvidia-smi").exists():  # no GPU here, whatever this machine has
    _executable(tmp_path / "bin" / "nvidia-smi", "#!/bin/bash\nexit 9\n")
  env["PATH"] = f"{tmp_path / 'bin'}:/usr/bin:/bin"
  return _bash(LAUNCH / "local_gpus.sh", *args, env=env, cwd=tmp_path)


def test_local_gpu_runner_runs_all_on_a_queue_and_reports_failures(tmp_path):
  commands = tmp_path / "commands.txt"
  commands.write_text("true\nfalse\n\n# a comment\necho x\n"
                      "echo \"$CUDA_VISIBLE_DEVICES $XLA_PYTHON_CLIENT_PREALLOCATE\"\nexit 3\n")
  result = _local_gpus(tmp_path, commands)
  assert result.returncode == 1, result.stdout + result.stderr
  assert "5 runs on 2 GPUs (0 1)" in result.stdout
  assert result.stdout.count("== start") == 5
  assert "5 runs, 3 succeeded, 2 failed." in result.stdout
  assert "FAILED run 2 (exit 1): false" in result.stdout and "FAILED run 5 (exit 3): exit 3" in result.stdout
  logs = tmp_path / "logs"
  assert sorted(p.name for p in logs.iterdir()) == [f"run-{k}.log" for k in range(1, 6)]
  assert (logs / "run-3.log").read_text().splitlines()[1:] == ["x"]
  gpu, prealloc = (logs / "run-4.log").read_text().splitlines()[1].split()
  assert gpu in ("0", "1") and prealloc == "false"
  used = {line.split(" on GPU ")[1].split(":")[0] for line in result.stdout.splitlines() if line.startswith("== start")}
  assert used == {"0", "1"}


def test_local_gpu_runner_takes_gpu_ids_and_a_sweep(tmp_path):
  ok = tmp_path / "ok.txt"
  ok.write_text("echo $CUDA_VISIBLE_DEVICES\n")
  result = _local_gpus(tmp_path, ok, GPUS="3")
  assert result.returncode == 0 and "1 runs, 1 succeeded, 0 failed." in result.stdout
  assert (tmp_path / "logs" / "run-1.log").read_text().splitlines()[1] == "3"
  # A sweep: the runs of `lstm_jax.commands.sweep ... --dry_run` that have not finished (a stand-in Python here).
  fake_python = _executable(tmp_path / "fake_python", "#!/bin/bash\necho \"$*\" > args.txt\n"
                            "echo 'echo first'\necho '[done] echo finished'\necho 'echo second'\n")
  result = _local_gpus(tmp_path, "--config=e.py", "--sweep=s", PYTHON=str(fake_python))
  assert result.returncode == 0, result.stderr
  assert (tmp_path / "args.txt").read_text().split() == ["-m", "lstm_jax.commands.sweep", "--config=e.py",
                                                         "--sweep=s", "--dry_run"]
  assert "2 runs on 2 GPUs" in result.stdout and "finished" not in result.stdout
  no_gpu = _local_gpus(tmp_path, ok, NUM_GPUS="")
  assert no_gpu.returncode == 2 and "nvidia-smi -L lists no GPU" in no_gpu.stderr
  _executable(tmp_path / "bin" / "nvidia-smi", "#!/bin/bash\necho 'GPU 0: A (UUID: a)'\necho 'GPU 1: B (UUID: b)'\n")
  listed = _local_gpus(tmp_path, ok, NUM_GPUS="")
  assert listed.returncode == 0 and "1 runs on 2 GPUs (0 1)" in listed.stdout


_GCLOUD_STUB = """#!/bin/bash
# Stand-in gcloud: appends its arguments (one per line, then ---) to $GCLOUD_LOG; fails for a run with FAILME.
printf '%s\\n' "$@" --- >> "$GCLOUD_LOG"
[[ "$4" != scp ]] || cp "$5" "$GCLOUD_LOG.tar.gz"
echo "gcloud $1 $2 $3 $4"
[[ "$*" != *FAILME* ]]
"""


def _tpu(tmp_path, runs_text, **env):
  _executable(tmp_path / "bin" / "gcloud", _GCLOUD_STUB)
  src = tmp_path / "src"
  (src / ".git").mkdir(parents=True, exist_ok=True)
  (src / "pyproject.toml").write_text("[project]\nname = 'x'\n")
  (src / ".git" / "HEAD").write_text("ref\n")
  runs = tmp_path / "runs.txt"
  runs.write_text(runs_text)
  env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "GCLOUD_LOG": str(tmp_path / "gcloud.log"),
         "TPU_NAME": "my-tpu", "ZONE": "us-central2-b", "BUCKET": "gs://bucket/lstm", "SRC": str(src),
         "LOG_DIR": str(tmp_path / "logs"), **env}
  result = _bash(LAUNCH / "tpu_vm.sh", runs, env=env, cwd=tmp_path)
  log = tmp_path / "gcloud.log"
  calls = [c.strip("\n").split("\n") for c in log.read_text().split("---\n") if c.strip()] if log.exists() else []
  return result, calls


def test_tpu_script_installs_once_on_all_workers_then_starts_each_run_independently(tmp_path):
  result, calls = _tpu(tmp_path, 'python -m lstm_jax.main --config=experiments/a.py --workdir="$BUCKET/one"\n'
                                 "# not a run\n"
                                 'python -m lstm_jax.main --config=experiments/b.py --workdir="$BUCKET/FAILME"\n\n'
                                 "python -m lstm_jax.main --config=experiments/c.py --workdir=gs://other/three\n")
  assert result.returncode == 1, result.stdout + result.stderr
  assert all("--worker=all" in call and "--zone=us-central2-b" in call for call in calls)
  scp, install, *runs = calls
  assert scp[:4] == ["compute", "tpus", "tpu-vm", "scp"] and scp[5] == "my-tpu:lstm_jax.tar.gz"
  packed = subprocess.run(["tar", "-tzf", str(tmp_path / "gcloud.log.tar.gz")], capture_output=True, text=True).stdout
  assert "./pyproject.toml" in packed.split() and ".git" not in packed  # the checkout, without its history
  commands = [next(a for a in call if a.startswith("--command="))[len("--command="):] for call in [install, *runs]]
  assert sum("pip install" in c for c in commands) == 1 and "pip install -q -e '.[tpu]'" in commands[0]
  assert [call[:5] for call in runs] == [["compute", "tpus", "tpu-vm", "ssh", "my-tpu"]] * 3
  for command, config in zip(commands[1:], "abc"):
    assert f"--config=experiments/{config}.py" in command
    assert "export BUCKET=gs://bucket/lstm LSTM_JAX_DISTRIBUTED=1 && python -m lstm_jax.main" in command
  for command in commands:  # what the workers' shell runs is valid bash
    assert _bash("-n", "-c", command).returncode == 0, command
  assert "FAILED run 2 (exit 1)" in result.stdout and "== run 3/3" in result.stdout
  assert "3 runs, 2 succeeded, 1 failed" in result.stdout
  assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["install.log", "run-1.log", "run-2.log", "run-3.log"]


def test_tpu_script_refuses_workdirs_off_the_bucket_and_missing_variables(tmp_path):
  result, calls = _tpu(tmp_path, "python -m lstm_jax.main --config=a.py --workdir=runs/local\n")
  assert result.returncode == 2 and "not on the bucket" in result.stderr and calls == []
  result, calls = _tpu(tmp_path, 'python -m lstm_jax.main --workdir="$BUCKET/x"\n', BUCKET="/local/dir")
  assert result.returncode == 2 and "gs://" in result.stderr and calls == []
  result, calls = _tpu(tmp_path, 'python -m lstm_jax.main --workdir="$BUCKET/x"\n', SKIP_INSTALL="1")
  assert result.returncode == 0 and len(calls) == 1 and "pip install" not in " ".join(calls[0])


def test_multihost_dry_run_gives_each_process_its_id_and_the_coordinator(tmp_path):
  result = _bash(LAUNCH / "multihost.sh", "2", "experiments/timemachine_lstm.py", tmp_path / "mh",
                 "--config.train.num_epochs=1", env={**os.environ, "DRY_RUN": "1", "COORDINATOR": "127.0.0.1:23456"})
  assert result.returncode == 0, result.stderr
  lines = [l for l in result.stdout.splitlines() if l.startswith("process ")]
  assert len(lines) == 2
  for i, line in enumerate(lines):
    for part in ("LSTM_JAX_DISTRIBUTED=1", "LSTM_JAX_COORDINATOR=127.0.0.1:23456", "LSTM_JAX_NUM_PROCESSES=2",
                 f"LSTM_JAX_PROCESS_ID={i}", "python -m lstm_jax.main --config=experiments/timemachine_lstm.py",
                 f"--workdir={tmp_path}/mh", "--config.train.num_epochs=1"):
      assert part in line, (part, line)
  assert not (tmp_path / "mh.logs").exists()
  # The second host of a two-host job: process id 1 of 2, the coordinator on the first host.
  other = _bash(LAUNCH / "multihost.sh", "1", "c.py", "gs://b/w", env={**os.environ, "DRY_RUN": "1",
                "COORDINATOR": "host0:12355", "NUM_PROCESSES": "2", "FIRST_PROCESS_ID": "1"})
  assert other.returncode == 0 and "LSTM_JAX_PROCESS_ID=1 " in other.stdout and "LSTM_JAX_NUM_PROCESSES=2" in other.stdout
  too_many = _bash(LAUNCH / "multihost.sh", "2", "c.py", "w", env={**os.environ, "DRY_RUN": "1",
                   "NUM_PROCESSES": "2", "FIRST_PROCESS_ID": "1", "COORDINATOR": "h:1"})
  assert too_many.returncode == 2 and "do not fit" in too_many.stderr


def test_multihost_waits_for_all_and_fails_if_one_fails(tmp_path):
  """With a stand-in Python: process 1 fails at once, process 0 would wait for it, and is stopped."""
  fake = _executable(tmp_path / "fake_python", "#!/bin/bash\necho \"process $LSTM_JAX_PROCESS_ID: $*\"\n"
                     "if [[ $LSTM_JAX_PROCESS_ID == 1 && -n ${FAIL:-} ]]; then echo boom; exit 4; fi\n"
                     "[[ -z ${FAIL:-} ]] || exec sleep 30\n")
  env = {**os.environ, "PYTHON": str(fake), "COORDINATOR": "127.0.0.1:1"}
  ok = _bash(LAUNCH / "multihost.sh", "2", "c.py", tmp_path / "ok", env=env)
  assert ok.returncode == 0, ok.stderr
  assert "process 0: -m lstm_jax.main --config=c.py" in (tmp_path / "ok.logs" / "process-0.log").read_text()
  bad = _bash(LAUNCH / "multihost.sh", "2", "c.py", tmp_path / "bad", env={**env, "FAIL": "1"}, timeout=25)
  assert bad.returncode == 1
  assert "FAILED process 1 (exit 4)" in bad.stderr and "boom" in bad.stderr and "process 0 stopped" in bad.stderr


def test_slurm_task_with_gpus_asked_for_fails_before_its_run_without_a_gpu(tmp_path):
  """The real device check, on this CPU-only machine: a task that asks for a GPU stops before its run."""
  runs = tmp_path / "runs.txt"
  runs.write_text("touch ran\n")
  script = tmp_path / "job.sbatch"
  script.write_text(sweep.render_slurm(runs, 1, sweep.Cluster(gpus=1, setup=f"export PATH={pathlib.Path(sys.executable).parent}:$PATH"),
                                       chdir=tmp_path))
  env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0", "JAX_PLATFORMS": "cpu"}
  result = _bash(script, env=env, timeout=120)
  assert result.returncode == 1 and "GPUs asked for, but JAX sees none" in result.stderr, result.stderr
  assert "CpuDevice" in result.stdout and not (tmp_path / "ran").exists()
