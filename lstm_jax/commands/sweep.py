"""Launch an experiment's sweep: ``python -m lstm_jax.commands.sweep --config experiments/lstm.py:corpus=jaychou
--sweep hidden --root runs/sweeps [--dry_run | --mode local|gpus|slurm|tpu|population]`` (``lstm_jax.sweeps.launch``).

``--mode slurm --runs_file runs.txt`` prints the SLURM array script of a runs file of your own instead.
"""

from absl import app, flags

from lstm_jax.commands import common
from lstm_jax.sweeps import launch as sweep

_CONFIG = flags.DEFINE_string("config", None, "Experiment file with its variant, e.g. experiments/lstm.py:cell=gru.",
                              )
_SWEEP = flags.DEFINE_string("sweep", None, "Name of the sweep in the experiment file.")
_ROOT = flags.DEFINE_string("root", "runs/sweeps", "Directory under which each run gets its workdir.")
_MODE = flags.DEFINE_enum("mode", "local", list(sweep.MODES),
                          "How to launch the runs; population: the pending runs as one vmapped program "
                          "(they may differ only in lstm_jax.sweeps.population.POPULATION_KEYS).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the runs' commands and exit.")
_EXTRA = flags.DEFINE_multi_string("set", [], "Extra overrides for every run, e.g. --set train.num_epochs=10.")
_TPU_NAME = flags.DEFINE_string("tpu_name", "my-tpu", "TPU VM name for --mode=tpu (--root gs://...: writes "
                                "runs/tpu/<sweep>.txt and prints the launch/tpu_vm.sh command).")
_TPU_ZONE = flags.DEFINE_string("tpu_zone", "us-central2-b", "TPU VM zone for --mode=tpu.")

_SLURM_TIME = flags.DEFINE_string("slurm_time", "04:00:00", "SLURM --time per run (--mode=slurm).")
_SLURM_MEM = flags.DEFINE_string("slurm_mem", "16G", "SLURM --mem per run.")
_SLURM_PARTITION = flags.DEFINE_string("slurm_partition", "", "SLURM --partition (empty: the cluster's default).")
_SLURM_CPUS = flags.DEFINE_integer("slurm_cpus", 4, "SLURM --cpus-per-task.")
_SLURM_GPUS = flags.DEFINE_integer("slurm_gpus", 1, "GPUs per SLURM task (0: none).")
_RUNS_FILE = flags.DEFINE_string("runs_file", None, "With --mode=slurm and no --config: print the SLURM array script "
                                 "of this file of commands (one run per line).")
_SETUP = flags.DEFINE_string("setup", "", "Shell line that activates the environment on a node (default: this venv).")


def main(argv):
  del argv
  cluster = sweep.Cluster(time=_SLURM_TIME.value, mem=_SLURM_MEM.value, partition=_SLURM_PARTITION.value,
                          cpus=_SLURM_CPUS.value, gpus=_SLURM_GPUS.value, setup=_SETUP.value)
  if _RUNS_FILE.value:
    if _MODE.value != "slurm" or _CONFIG.value:
      raise app.UsageError("--runs_file goes with --mode=slurm and without --config / --sweep.")
    try:
      print(sweep.slurm_for_runs_file(_RUNS_FILE.value, cluster), end="")
    except (OSError, ValueError) as e:
      raise SystemExit(f"error: {e} ({_RUNS_FILE.value})") from e
    return
  if not (_CONFIG.value and _SWEEP.value):
    raise app.UsageError("Pass --config FILE[:variant] and --sweep NAME (or --mode=slurm --runs_file FILE).")
  try:
    sweep.launch(_CONFIG.value, _SWEEP.value, _ROOT.value, _MODE.value, tuple(_EXTRA.value), _DRY_RUN.value,
                 _TPU_NAME.value, _TPU_ZONE.value, cluster)
  except (OSError, ValueError) as e:  # a bad experiment file, sweep name or root: one line, exit 1
    raise SystemExit(f"error: {e}") from e


def run():
  app.run(main, flags_parser=common.parse_flags)


if __name__ == "__main__":
  run()
